// Playground: the same input to each chosen variant at once; answers stream side by side.
"use strict";

async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

async function runOne(url, body, card) {
  const field = (name) => card.querySelector("." + name);
  const started = performance.now();
  const ms = () => Math.round(performance.now() - started);
  field("state").textContent = "streaming";
  const response = await adaptd.post(url, body);
  if (!response.ok) {
    const error = await response.json().catch(() => ({}));
    field("state").textContent = "failed";
    field("text").textContent = (error.error && error.error.message) || `HTTP ${response.status}`;
    return;
  }
  let first = true;
  for await (const data of serverSentEvents(response)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) {
      field("state").textContent = "failed";
      field("text").textContent += `\n[${chunk.error.message}]`;
      return;
    }
    for (const choice of chunk.choices || []) {
      const text = choice.delta && choice.delta.content;
      if (text) {
        if (first) { field("first").textContent = ms(); first = false; }
        field("text").textContent += text;
      }
    }
    if (chunk.usage) {
      field("prompt-tokens").textContent = chunk.usage.prompt_tokens;
      field("completion-tokens").textContent = chunk.usage.completion_tokens;
    }
  }
  field("latency").textContent = ms();
  field("state").textContent = "done";
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("playground-form");
  const answers = document.getElementById("answers");
  const template = document.getElementById("answer-template");
  const error = document.getElementById("playground-error");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const models = [...new Set(data.getAll("variant").filter(Boolean))];
    if (models.length < 2 || models.length > 4) {
      error.textContent = "Choose 2 to 4 different variants.";
      return;
    }
    error.textContent = "";
    answers.replaceChildren();
    const runs = models.map((model) => {
      const card = template.content.firstElementChild.cloneNode(true);
      card.querySelector(".model").textContent = model;
      card.dataset.model = model;
      answers.appendChild(card);
      const body = {
        model,
        input: data.get("input"),
        max_tokens: Number(data.get("max_tokens")) || 64,
        temperature: Number(data.get("temperature")) || 0,
      };
      return runOne(form.dataset.stream, body, card).catch((e) => {
        card.querySelector(".state").textContent = "failed";
        card.querySelector(".text").textContent = String(e);
      });
    });
    await Promise.all(runs);
  });
});
