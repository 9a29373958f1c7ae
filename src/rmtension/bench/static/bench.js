// The bench's page script: stream the two replies (server-sent events), submit a judgment,
// keyboard shortcuts. Every model and user string goes into the page as a text node.
"use strict";

function judgeButtons(enabled) {
  document.querySelectorAll("#judge .picks button").forEach((b) => { b.disabled = !enabled; });
}

function setStatus(text) {
  const status = document.getElementById("status");
  if (status) status.textContent = text;
}

function streamReplies(itemId) {
  const boxes = { left: document.getElementById("reply-left"), right: document.getElementById("reply-right") };
  boxes.left.textContent = "";
  boxes.right.textContent = "";
  const source = new EventSource("/items/" + encodeURIComponent(itemId) + "/stream");
  source.addEventListener("delta", (e) => {
    const d = JSON.parse(e.data);
    const box = boxes[d.side];
    if (box) box.appendChild(document.createTextNode(d.text));
  });
  source.addEventListener("done", () => {
    source.close();
    setStatus("");
    judgeButtons(true);
    document.getElementById("work").dataset.state = "ready";
  });
  source.addEventListener("failed", (e) => {
    source.close();
    setStatus(JSON.parse(e.data).message + " Reload the page to try again.");
  });
  source.onerror = () => { source.close(); setStatus("The connection to the server was lost. Reload the page to try again."); };
}

async function submitJudgment(form, pick) {
  judgeButtons(false);
  const body = new URLSearchParams(new FormData(form));
  body.set("pick", pick);
  setStatus("Saving…");
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const r = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
      const answer = await r.json();
      if (r.ok) { window.location.assign(answer.next); return; }
      setStatus(answer.error || "Refused.");
      return;
    } catch (err) {
      setStatus("Saving… (retrying)");
      await new Promise((res) => setTimeout(res, 1000 * (attempt + 1)));
    }
  }
  setStatus("Not saved: the server does not answer.");
  judgeButtons(true);
}

function typing(e) {
  const t = e.target;
  return t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.isContentEditable);
}

function shortcuts(form) {
  const picks = { a: "left", b: "right", t: "tie", x: "both_bad" };
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.toLowerCase();
    if (["1", "2", "3"].includes(key)) {
      form.querySelector('input[name="strength"][value="' + key + '"]').checked = true;
    } else if (picks[key] && document.getElementById("work").dataset.state === "ready") {
      e.preventDefault();
      submitJudgment(form, picks[key]);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const work = document.getElementById("work");
  const form = document.getElementById("judge");
  if (!work || !form) return;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const pick = e.submitter ? e.submitter.value : "";
    if (pick) submitJudgment(form, pick);
  });
  shortcuts(form);
  if (work.dataset.state === "ready") judgeButtons(true);
  else if (work.dataset.item) streamReplies(work.dataset.item);
});
