// The study page: report numbers, scrollable axial/sagittal views with overlays, BMD chart, 3D spine.
import { api, apiJson, el, fmt, showHealth, withAuth } from "/static/common.js";

// ACR QCT categories (mg/cm3, mean of L1-L2; see REFERENCE.md): <80 osteoporosis, 80-120 osteopenia.
const ACR_OSTEOPOROSIS = 80;
const ACR_NORMAL = 120;

const jobId = decodeURIComponent(location.pathname.split("/").pop());
const base = `/api/v1/jobs/${encodeURIComponent(jobId)}`;

function dl(target, pairs) {
  const node = document.getElementById(target);
  node.replaceChildren();
  for (const [k, v] of pairs) node.append(el("dt", { text: k }), el("dd", { text: v }));
}

function showNumbers(r) {
  const s = r.summary;
  const fractures = s.fractures.map((f) => `${f.level}: Genant ${f.genant_grade} (${f.shape}, ${fmt(f.height_loss_percent)} %)`);
  dl("summary", [
    ["BMD L1-L2", `${fmt(s.bmd_l1_l2_mg_cm3)} mg/cm\u00b3`],
    ["ACR category", s.acr_category || "\u2013"],
    ["L1 HU", `${fmt(s.l1_hu)} ${s.l1_hu_flag ? "(" + s.l1_hu_flag + ")" : ""}`],
    ["Fractures", fractures.length ? fractures.join("; ") : "none"],
    ["Lordosis", `${fmt(s.lordosis_deg)}\u00b0`],
    ["Contrast phase", s.contrast_phase || "\u2013"],
  ]);
  const tbody = document.querySelector("#vertebrae tbody");
  tbody.replaceChildren(...r.vertebrae.map((v) => el("tr", { "data-level": v.level, class: v.complete ? "" : "partial" },
    el("td", { text: v.level }),
    el("td", { class: "num", text: fmt(v.bmd_mg_cm3) }),
    el("td", { class: "num", text: fmt(v.hu_trabecular) }),
    el("td", { class: "num", text: fmt(v.height_ratio_min, 2) }),
    el("td", { class: "num", text: v.genant_grade === null ? "\u2013" : String(v.genant_grade) }),
    el("td", { text: v.fracture_shape || "" }))));
  const c = r.composition || {};
  dl("composition", [
    ["Skeletal muscle (SMA)", `${fmt(c.sma_cm2, 1)} cm\u00b2`],
    ["Subcutaneous fat (SAT)", `${fmt(c.sat_cm2, 1)} cm\u00b2`],
    ["Visceral fat (VAT)", `${fmt(c.vat_cm2, 1)} cm\u00b2`],
    ["Intermuscular fat (IMAT)", `${fmt(c.imat_cm2, 1)} cm\u00b2`],
    ["Muscle density", `${fmt(c.muscle_hu)} HU`],
    ["SMI", c.smi_cm2_m2 === null || c.smi_cm2_m2 === undefined ? "\u2013 (height unknown)" : `${fmt(c.smi_cm2_m2, 1)} cm\u00b2/m\u00b2`],
  ]);
  const qc = document.getElementById("qc");
  const items = [...r.qc.warnings, ...Object.entries(r.qc.not_reported).map(([k, v]) => `${k}: ${v}`)];
  const details = el("details", {}, el("summary", { text: `${items.length} note(s): warnings and values not reported` }),
    el("ul", {}, ...items.map((t) => el("li", { text: t }))));
  qc.replaceChildren(el("h3", { text: "Quality control" }),
    el("p", { text: `levels in view: ${r.qc.coverage.join(" ") || "none"}` }), details);
}

function showChart(r) {
  const svg = document.getElementById("bmd-chart");
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  svg.replaceChildren();
  const verts = r.vertebrae.filter((v) => v.bmd_mg_cm3 !== null);
  const W = 420, H = 260, left = 40, bottom = 30, top = 10;
  const ymax = Math.max(200, ...verts.map((v) => v.bmd_mg_cm3 + (v.bmd_uncertainty_mg_cm3 || 0))) * 1.05;
  const y = (v) => top + (H - top - bottom) * (1 - v / ymax);
  add("rect", { x: left, y: y(ACR_OSTEOPOROSIS), width: W - left, height: y(0) - y(ACR_OSTEOPOROSIS), class: "band osteoporosis" });
  add("rect", { x: left, y: y(ACR_NORMAL), width: W - left, height: y(ACR_OSTEOPOROSIS) - y(ACR_NORMAL), class: "band osteopenia" });
  for (const t of [0, 50, 100, 150, 200, 250, 300].filter((t) => t <= ymax)) {
    add("line", { x1: left - 4, x2: W, y1: y(t), y2: y(t), class: "grid" });
    add("text", { x: left - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, String(t));
  }
  const bw = verts.length ? (W - left - 10) / verts.length : 0;
  verts.forEach((v, i) => {
    const x = left + 5 + i * bw;
    const cat = v.bmd_mg_cm3 < ACR_OSTEOPOROSIS ? "osteoporosis" : v.bmd_mg_cm3 < ACR_NORMAL ? "osteopenia" : "normal";
    add("rect", { x: x + bw * 0.15, y: y(v.bmd_mg_cm3), width: bw * 0.7, height: y(0) - y(v.bmd_mg_cm3), class: `bar ${cat}`, "data-level": v.level });
    if (v.bmd_uncertainty_mg_cm3) {
      add("line", { x1: x + bw / 2, x2: x + bw / 2, y1: y(v.bmd_mg_cm3 - v.bmd_uncertainty_mg_cm3), y2: y(v.bmd_mg_cm3 + v.bmd_uncertainty_mg_cm3), class: "err" });
    }
    add("text", { x: x + bw / 2, y: H - bottom + 16, class: "tick", "text-anchor": "middle" }, v.level);
  });
  add("text", { x: 4, y: 12, class: "tick" }, "mg/cm\u00b3");
}

function setupView(plane, info, windowSel, overlayBox, start) {
  const n = info.slices[plane];
  const slider = document.getElementById(`${plane}-slider`);
  const view = document.getElementById(plane);
  const ct = view.querySelector("img.ct");
  const ov = view.querySelector("img.overlay");
  slider.max = String(n - 1);
  slider.value = String(Math.max(0, Math.min(n - 1, start)));
  const show = () => {
    const i = slider.value;
    ct.src = `${base}/images/${plane}/${i}.png?window=${windowSel.value}`;
    ov.src = `${base}/images/${plane}/${i}.png?overlay=true`;
    ov.hidden = !overlayBox.checked || !info.has_labels && !(plane === "axial" && info.tissue_index !== null);
    document.getElementById(`${plane}-pos`).textContent = `${Number(i) + 1} / ${n}`;
  };
  slider.oninput = show;
  view.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    slider.value = String(Math.max(0, Math.min(n - 1, Number(slider.value) + (ev.deltaY > 0 ? -1 : 1))));
    show();
  }, { passive: false });
  windowSel.addEventListener("change", show);
  overlayBox.addEventListener("change", show);
  show();
}

function centreIndex(info) {
  // sagittal: through the vertebral bodies when the server found them, else the middle
  return info.spine_index !== null ? info.spine_index : Math.floor(info.slices.sagittal / 2);
}

async function showSpine(url) {
  const status = document.getElementById("spine-status");
  const canvas = document.getElementById("spine-canvas");
  let THREE;
  try {
    THREE = await import("three-viewer");
  } catch (e) {
    status.textContent = `3D viewer unavailable: ${e}`;
    return;
  }
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  const box = canvas.parentElement;
  renderer.setSize(box.clientWidth, box.clientHeight, false);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x101418);
  const camera = new THREE.PerspectiveCamera(40, box.clientWidth / box.clientHeight, 0.1, 10000);
  scene.add(new THREE.AmbientLight(0xffffff, 0.6));
  const light = new THREE.DirectionalLight(0xffffff, 1.6);
  scene.add(light);
  const gltf = await new THREE.GLTFLoader().loadAsync(url);
  scene.add(gltf.scene);
  const bbox = new THREE.Box3().setFromObject(gltf.scene);
  const size = bbox.getSize(new THREE.Vector3());
  const centre = bbox.getCenter(new THREE.Vector3());
  const dist = Math.max(size.x, size.y, size.z) * 1.6;
  camera.position.set(centre.x + dist, centre.y + dist * 0.2, centre.z + dist * 0.3);
  camera.lookAt(centre);
  const controls = new THREE.OrbitControls(camera, canvas);
  controls.target.copy(centre);
  controls.update();
  let meshes = 0;
  gltf.scene.traverse((o) => { if (o.isMesh) meshes += 1; });
  const frame = () => {
    light.position.copy(camera.position);
    renderer.render(scene, camera);
  };
  controls.addEventListener("change", frame);
  frame();
  status.textContent = `${meshes} mesh(es); drag to rotate, wheel to zoom`;
  canvas.dataset.meshes = String(meshes);
  document.body.dataset.spineRendered = "1";
}

async function main() {
  showHealth();
  const job = await withAuth(() => apiJson(base));
  document.getElementById("title").textContent = `${job.patient_id || "Study"} \u00b7 ${job.description || job.id}`;
  document.getElementById("job-state").replaceChildren(el("span", { class: `badge ${job.state}`, text: job.state }));
  if (job.state !== "done") {
    const nd = document.getElementById("not-done");
    nd.hidden = false;
    nd.textContent = job.reason ? `${job.state}: ${job.reason}` : `${job.state} (${Math.round(job.progress * 100)} %)`;
    if (!job.state.match(/failed|rejected/)) setTimeout(() => location.reload(), 3000);
    return;
  }
  const links = [["report.pdf", `${base}/report.pdf`], ["result.json", `${base}/result.json`],
    ...job.outputs.filter((o) => o.endsWith(".dcm") || o.endsWith(".html")).map((o) => [o, `${base}/files/${o}`])];
  document.getElementById("downloads").replaceChildren(...links.map(([t, h]) => el("a", { href: h, text: t })));
  document.getElementById("study").hidden = false;
  const result = await apiJson(`${base}/result.json`);
  showNumbers(result);
  showChart(result);
  const info = await apiJson(`${base}/images`);
  const windowSel = document.getElementById("window");
  const overlayBox = document.getElementById("show-overlay");
  const l3 = info.tissue_index !== null ? info.tissue_index : Math.floor(info.slices.axial / 2);
  setupView("axial", info, windowSel, overlayBox, l3);
  setupView("sagittal", info, windowSel, overlayBox, centreIndex(info));
  if (job.outputs.includes("spine.glb")) {
    showSpine(`${base}/files/spine.glb`).catch((e) => {
      document.getElementById("spine-status").textContent = `3D view failed: ${e}`;
    });
  } else {
    document.getElementById("spine-status").textContent = "no 3D model in this job's outputs";
  }
}

main();
