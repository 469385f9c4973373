// Job page: follows the job over server-sent events until it is over.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("job");
  if (root.dataset.terminal === "true") return;
  const $ = (id) => document.getElementById(id);
  const show = (value, digits) =>
    value === null || value === undefined ? "—" : digits === undefined ? String(value) : Number(value).toFixed(digits);
  const when = (unix) => new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19);
  let lastStep = null;

  function row(cells) {
    const tr = document.createElement("tr");
    for (const [text, code] of cells) {
      const td = document.createElement("td");
      if (code) {
        const c = document.createElement("code");
        c.textContent = text;
        td.appendChild(c);
      } else {
        td.textContent = text;
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function update(state) {
    $("status").textContent = state.status;
    $("status").className = `status status-${state.status}`;
    $("progress").value = state.percent;
    $("progress").textContent = `${state.percent}%`;
    $("percent").textContent = state.percent;
    $("step").textContent = show(state.step);
    $("total").textContent = show(state.total_steps);
    $("eta").textContent = show(state.eta_seconds, 0);
    $("train-loss").textContent = show(state.train_loss, 3);
    $("valid-loss").textContent = show(state.valid_loss, 3);
    $("result").textContent = state.fine_tuned_model ? `Model: ${state.fine_tuned_model}` : "";
    $("job-error").textContent = state.error ? `${state.error.code}: ${state.error.message}` : "";
    if (state.step !== lastStep || state.terminal) {
      lastStep = state.step;
      $("loss-chart").src = `${root.dataset.chart}?step=${state.step}&status=${state.status}`;
    }
    $("events").replaceChildren(
      ...state.events.map((e) => {
        const li = document.createElement("li");
        const time = document.createElement("time");
        time.textContent = when(e.created_at);
        li.append(time, " " + e.message);
        return li;
      }),
    );
    if (state.checkpoints.length) {
      $("checkpoints").replaceChildren(
        ...state.checkpoints.map((c) => {
          const metrics = Object.entries(c.metrics)
            .filter(([, v]) => v !== null)
            .map(([k, v]) => `${k} ${typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : v}`);
          return row([[c.model, true], [String(c.step), false], [metrics.join(", "), false]]);
        }),
      );
    }
    if (state.terminal) {
      const cancel = $("cancel-form");
      if (cancel) cancel.remove();
    }
  }

  let finished = false;
  const source = new EventSource(root.dataset.live);
  source.onmessage = (event) => {
    const state = JSON.parse(event.data);
    finished = state.terminal;
    update(state);
  };
  source.addEventListener("end", () => {
    source.close();
    // Once over, the page is drawn again from the server: the hyperparameters the worker
    // chose (and why) are in the job's details only from then on.
    if (finished) window.location.reload();
  });
});
