"""GET /v1/models/{model} through the official openai client: one card for each kind of
variant (base, template, template version and tag, adapter, checkpoint, alias), and
NotFoundError for unknown names and other tenants' variants."""

import openai
import pytest

from app.db import get_sessionmaker
from app.ids import new_id
from app.registry.models import Adapter
from tests.conftest import ADMIN_KEY, make_tenant_key
from tests.registry_util import register_random_adapter


def add_checkpoint(adapter_name: str, step: int) -> str:
    """A checkpoint row as the trainer registers one: the adapter's name with :ckpt-step-N."""
    with get_sessionmaker()() as s:
        row = s.query(Adapter).filter_by(name=adapter_name).one()
        name = f"{adapter_name}:ckpt-step-{step}"
        s.add(
            Adapter(
                id=new_id("adapter_"),
                tenant=row.tenant,
                name=name,
                job_id=row.job_id,
                base_model=row.base_model,
                path=row.path,
                bytes=0,
                manifest={},
            )
        )
        s.commit()
    return name


@pytest.fixture
def variants(client) -> dict[str, str]:
    base = client.app.state.engine.name
    adapter = register_random_adapter("default", "card")
    checkpoint = add_checkpoint(adapter, 3)
    r = client.post("/v1/templates", json={"name": "t", "system_prompt": "s", "model": adapter})
    assert r.status_code == 201, r.text
    assert client.put("/v1/templates/t/tags/prod", json={"version": 1}).status_code == 200
    r = client.post("/v1/aliases", json={"name": "prod", "targets": [{"model": "tmpl:t"}]})
    assert r.status_code == 201, r.text
    return {"base": base, "adapter": adapter, "checkpoint": checkpoint}


def test_retrieve_every_kind_with_the_openai_client(client, live_server, variants) -> None:
    oai = openai.OpenAI(base_url=f"{live_server}/v1", api_key=ADMIN_KEY, max_retries=0)
    expected = {
        variants["base"]: ("base", "adaptd"),
        variants["adapter"]: ("adapter", "default"),
        variants["checkpoint"]: ("adapter", "default"),
        "tmpl:t": ("template", "default"),
        "tmpl:t@1": ("template", "default"),
        "tmpl:t@prod": ("template", "default"),
        "prod": ("alias", "default"),
    }
    for name, (kind, owner) in expected.items():
        card = oai.models.retrieve(name)
        assert card.id == name and card.object == "model" and card.owned_by == owner, name
        assert card.model_extra["kind"] == kind, name
        assert card.created > 0 or kind == "base"
    # Every listed model can be retrieved, with the same card (an adapter's parent too).
    with get_sessionmaker()() as s:
        s.query(Adapter).filter_by(name=variants["checkpoint"]).update(
            {"parent": variants["adapter"]}
        )
        s.commit()
    for listed in oai.models.list():
        assert oai.models.retrieve(listed.id).model_dump() == listed.model_dump(), listed.id
    assert oai.models.retrieve(variants["checkpoint"]).model_extra["parent"] == variants["adapter"]


def test_unknown_and_foreign_models_are_404(client, live_server, variants) -> None:
    other = make_tenant_key(client, "other")
    oai = openai.OpenAI(base_url=f"{live_server}/v1", api_key=other, max_retries=0)
    assert oai.models.retrieve(variants["base"]).id == variants["base"]
    for name in [
        variants["adapter"],
        variants["checkpoint"],
        "tmpl:t",
        "tmpl:t@prod",
        "prod",
        "nope",
        "ft:x:y:z",
        "tmpl:t@99",
        "tmpl:t@9223372036854775808",
    ]:
        with pytest.raises(openai.NotFoundError) as err:
            oai.models.retrieve(name)
        assert err.value.body["code"] == "model_not_found", name


def test_retrieve_needs_the_inference_scope(client, variants) -> None:
    r = client.post("/v1/admin/keys", json={"tenant": "default", "scopes": ["manage"]})
    h = {"Authorization": f"Bearer {r.json()['key']}"}
    r = client.get(f"/v1/models/{variants['adapter']}", headers=h)
    assert r.status_code == 403 and "'inference'" in r.json()["error"]["message"]
