// The worklist: every job with its status, progress and key findings; refreshes every 2 s.
import { api, apiJson, el, fmt, showHealth, withAuth } from "/static/common.js";

const REFRESH_MS = 2000;

function statusCell(job) {
  const td = el("td", { class: `state ${job.state}` });
  td.append(el("span", { class: `badge ${job.state}`, text: job.state }));
  if (job.state === "running") {
    const bar = el("progress", { max: "1", value: String(job.progress) });
    td.append(" ", bar, el("small", { text: ` ${job.stage || ""}` }));
  }
  if (job.reason) td.append(el("div", { class: "reason", text: job.reason }));
  return td;
}

function row(job) {
  const s = job.summary || {};
  const when = new Date(job.created_at * 1000).toLocaleString();
  const link = el("a", { href: `/study/${job.id}`, text: when });
  const fractures = (s.fractures || []).map((f) => `${f.level} (G${f.genant_grade})`).join(", ");
  const send = job.send_state === "none" ? "" : job.send_state + (job.send_reason ? `: ${job.send_reason}` : "");
  const tr = el("tr", { "data-job": job.id, class: job.state },
    el("td", {}, link),
    el("td", { text: job.patient_id || "" }),
    el("td", { text: job.description || "" }),
    el("td", { text: job.source + (job.calling_aet ? ` (${job.calling_aet})` : "") }),
    statusCell(job),
    el("td", { class: "num bmd", text: fmt(s.bmd_l1_l2_mg_cm3) }),
    el("td", { class: `acr ${s.acr_category || ""}`, text: s.acr_category || "" }),
    el("td", { class: "num", text: fmt(s.l1_hu) }),
    el("td", { text: fractures || (job.state === "done" ? "none" : "") }),
    el("td", { class: "num", text: fmt(s.sma_cm2, 1) }),
    el("td", { class: `send ${job.send_state}`, text: send }));
  return tr;
}

async function refresh() {
  const data = await apiJson("/api/v1/jobs?limit=500");
  const tbody = document.querySelector("#worklist tbody");
  tbody.replaceChildren(...data.jobs.map(row));
  document.getElementById("empty").hidden = data.jobs.length > 0;
  const c = data.counts;
  document.getElementById("counts").textContent =
    `${c.queued} queued \u00b7 ${c.running} running \u00b7 ${c.done} done \u00b7 ${c.failed} failed \u00b7 ${c.rejected} rejected`;
}

async function upload(ev) {
  ev.preventDefault();
  const files = document.getElementById("upload-files").files;
  const status = document.getElementById("upload-status");
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  status.textContent = "uploading\u2026";
  const resp = await fetch("/api/v1/studies", { method: "POST", body: form, credentials: "same-origin" });
  const body = await resp.json();
  status.textContent = resp.status === 202 ? `queued as ${body.id}` : `rejected: ${body.reason || body.detail}`;
  await refresh();
}

async function main() {
  showHealth();
  await withAuth(refresh);
  document.getElementById("upload-form").onsubmit = (ev) => withAuth(() => upload(ev));
  setInterval(() => { withAuth(refresh); showHealth(); }, REFRESH_MS);
}

main();
