// Template editor: example rows, and a live preview of the rendered prompt on every change.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("template-form");
  const list = document.getElementById("example-list");
  const rowTemplate = document.getElementById("example-template");
  let counter = list.querySelectorAll(".example").length;

  function addExample() {
    counter += 1;
    const row = rowTemplate.content.firstElementChild.cloneNode(true);
    const [inLabel, outLabel] = row.querySelectorAll("label");
    const [inArea, outArea] = row.querySelectorAll("textarea");
    inArea.id = `ex-in-${counter}`;
    outArea.id = `ex-out-${counter}`;
    inLabel.htmlFor = inArea.id;
    outLabel.htmlFor = outArea.id;
    inLabel.textContent = `Example ${counter} input`;
    outLabel.textContent = `Example ${counter} output`;
    row.querySelector(".remove-example").textContent = `Remove example ${counter}`;
    list.appendChild(row);
    inArea.focus();
  }

  document.getElementById("add-example").addEventListener("click", addExample);
  list.addEventListener("click", (event) => {
    if (event.target.classList.contains("remove-example")) {
      event.target.closest(".example").remove();
      schedule();
    }
  });

  const out = {
    prompt: document.getElementById("preview-prompt"),
    tokens: document.getElementById("preview-tokens"),
    examples: document.getElementById("preview-examples"),
    error: document.getElementById("preview-error"),
  };
  let timer = null;
  let sequence = 0;

  function showErrors(errors) {
    form.querySelectorAll("[data-error-for]").forEach((el) => {
      el.textContent = errors[el.dataset.errorFor] || "";
    });
    const messages = Object.values(errors);
    out.error.textContent = messages.length ? messages.join(" ") : "";
  }

  async function refresh() {
    const mine = ++sequence;
    const response = await adaptd.post(form.dataset.preview, new FormData(form));
    if (mine !== sequence) return; // a newer preview is on its way
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      showErrors(body.errors || {});
      out.prompt.textContent = body.prompt;
      out.tokens.textContent = body.prompt_tokens;
      out.examples.textContent = body.examples_used;
    } else {
      showErrors(body.errors || { form: (body.error && body.error.message) || "Preview failed." });
      out.tokens.textContent = "—";
      out.examples.textContent = "—";
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }

  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  document.getElementById("sample_input").addEventListener("input", schedule);
  refresh();
});
