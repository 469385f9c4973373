// Shared by the console's scripts: the CSRF token and a JSON/form POST helper.
"use strict";
window.adaptd = {
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },
  post(url, body) {
    const headers = { "X-CSRF-Token": this.csrf() };
    if (!(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    return fetch(url, { method: "POST", headers, body, credentials: "same-origin" });
  },
};
