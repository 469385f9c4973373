// Fine-tuning form: show what "auto" becomes for the chosen training file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const select = document.getElementById("training_file");
  function showAuto() {
    const option = select.selectedOptions[0];
    if (!option) return;
    document.querySelectorAll("[data-auto-for]").forEach((el) => {
      el.textContent = option.getAttribute("data-auto-" + el.dataset.autoFor) || "—";
    });
  }
  select.addEventListener("change", showAuto);
  showAuto();
});
