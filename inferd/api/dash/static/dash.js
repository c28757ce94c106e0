// inferd dashboard: copy buttons, typed confirmations, and the playground's streamed chat.
"use strict";
document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const text = document.getElementById(copy.dataset.copy).textContent.trim();
    navigator.clipboard && navigator.clipboard.writeText(text);
    copy.textContent = "Copied";
  }
});
document.addEventListener("submit", (event) => {
  const form = event.target;
  const word = form.dataset.confirm;
  if (word && form.querySelector("[name=confirm]").value !== word) {
    event.preventDefault();
    form.querySelector("[role=alert]").textContent = `Type "${word}" to go on.`;
  }
});
const play = document.getElementById("playground");
if (play) {
  play.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("reply");
    out.textContent = "";
    const response = await fetch(play.action, { method: "POST", body: new FormData(play) });
    const type = response.headers.get("content-type") || "";
    if (!response.ok || !response.body || !type.startsWith("text/event-stream")) {
      // A refused form (403) or an ended session (the login page) is not a stream.
      out.textContent = response.redirected
        ? "Your session ended: sign in again."
        : `Error ${response.status}: reload the page and try again.`;
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const item of events) {
        const data = item.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) { out.textContent += `\n[${chunk.error.message}]`; continue; }
        out.textContent += chunk.choices[0].delta.content || "";
      }
    }
  });
}
// Tables that refresh themselves while something in them changes state (deployments starting,
// containers booting, deliveries on their way): an element with data-refresh="URL" whose
// content holds [data-pending] is replaced by a fresh GET of URL every 3 s, and left alone
// once nothing is pending. Not while a field in it has focus (a half-typed form is kept).
for (const live of document.querySelectorAll("[data-refresh]")) {
  const tick = async () => {
    if (!live.querySelector("[data-pending]")) return;
    const focused = document.activeElement;
    if (!(live.contains(focused) && focused.matches("input, select, textarea"))) {
      try {
        const response = await fetch(live.dataset.refresh, { credentials: "same-origin" });
        if (response.ok && !response.redirected) {
          const id = live.contains(focused) ? focused.id : "";
          live.innerHTML = await response.text();
          if (id && document.getElementById(id)) document.getElementById(id).focus();
        }
      } catch (_) {
        // the server is away for a moment: try again on the next tick
      }
    }
    setTimeout(tick, 3000);
  };
  setTimeout(tick, 3000);
}
