// Evaluation page while it runs: poll its state, reload once when the report is written.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("eval");
  async function poll() {
    const response = await fetch(root.dataset.state, { credentials: "same-origin" });
    if (response.ok) {
      const state = await response.json();
      document.getElementById("status").textContent = state.status;
      document.getElementById("last-event").textContent = state.last_event || "";
      if (state.terminal) {
        window.location.reload();
        return;
      }
    }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
});
