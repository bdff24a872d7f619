// The valuedetect page: plain DOM and SVG, no libraries, so it works offline and loads instantly.
// User text is only ever placed with textContent, never parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

// add(tag, attrs, text) appends an SVG element with those attributes (and text) to svg.
function svgAdder(svg) {
  return (tag, attrs, text) => {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.appendChild(el);
    return el;
  };
}
const $ = (id) => document.getElementById(id);
let modelInfo = null;      // GET /v1/model: categories (official order), groups, thresholds
let lastPrediction = null; // {argument, result}
let lastExplanation = null;
let selectedCategory = null;

function apiKey() { return sessionStorage.getItem("valuedetect-key") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (apiKey()) headers["Authorization"] = "Bearer " + apiKey();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("key-row").hidden = false;
    throw new Error("this server needs an API key: enter it above and try again");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); if (body.error) message = body.error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function loadModel() {
  const info = await (await api("/v1/model")).json();
  modelInfo = info;
  const f1 = info.validation_f1 == null ? "" : `, validation F1 ${info.validation_f1.toFixed(3)}`;
  $("model-line").textContent = `Model: ${info.name} (${info.type}${f1}).`;
}

function currentArgument() {
  const premise = $("premise").value;
  const conclusion = $("conclusion").value.trim();
  if (!premise.trim()) throw new Error("write a premise or some text first");
  return conclusion ? { premise, conclusion, stance: $("stance").value } : { text: premise };
}

function setStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

// ------------------------------------------------------------------ chart
function drawChart(probabilities, detected) {
  const chart = $("chart");
  chart.replaceChildren();
  const width = 560, labelWidth = 200, barWidth = width - labelWidth - 50, rowHeight = 17;
  const groups = [];
  for (const c of modelInfo.categories) {
    let g = groups.find((x) => x.name === c.group);
    if (!g) { g = { name: c.group, items: [] }; groups.push(g); }
    g.items.push(c);
  }
  const height = groups.length * 22 + modelInfo.categories.length * rowHeight + 10;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const add = svgAdder(svg);
  let y = 4;
  for (const g of groups) {
    add("text", { x: 0, y: y + 14, class: "group" }, g.name);
    y += 22;
    for (const c of g.items) {
      const p = probabilities[c.name];
      const on = detected.includes(c.name);
      add("text", { x: labelWidth - 6, y: y + 12, "text-anchor": "end" }, c.name);
      const bar = add("rect", {
        x: labelWidth, y: y + 2, width: Math.max(1, p * barWidth), height: rowHeight - 5,
        class: "bar" + (on ? " on" : "") + (c.name === selectedCategory ? " selected" : ""),
        "data-category": c.name, "data-detected": on ? "1" : "0",
      });
      bar.appendChild(document.createElementNS(SVG, "title")).textContent =
        `${c.name}: p = ${p.toFixed(3)}, threshold ${c.threshold.toFixed(3)}`;
      const tx = labelWidth + c.threshold * barWidth;
      add("line", { x1: tx, x2: tx, y1: y, y2: y + rowHeight - 1, class: "tick" });
      add("text", { x: labelWidth + barWidth + 6, y: y + 12 }, p.toFixed(2));
      const hit = add("rect", { x: 0, y, width, height: rowHeight, class: "row-hit" });
      hit.addEventListener("click", () => selectCategory(c.name));
      y += rowHeight;
    }
  }
  chart.appendChild(svg);
}

// ------------------------------------------------------------------ explanation
function renderDetected(detected) {
  const list = $("detected");
  list.replaceChildren();
  if (!detected.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "none above threshold";
    list.appendChild(li);
    return;
  }
  for (const name of detected) {
    const li = document.createElement("li");
    li.textContent = name;
    li.dataset.category = name;
    li.classList.toggle("selected", name === selectedCategory);
    li.addEventListener("click", () => selectCategory(name));
    list.appendChild(li);
  }
}

// The detected level-1 values, each under its category (a category is present when any of its
// level-1 values is, so a detected value whose category fell short of its threshold still shows).
function renderLevel1(result) {
  const box = $("level1"), list = $("level1-list");
  list.replaceChildren();
  box.hidden = !result.level1;
  if (!result.level1) return;
  const detected = new Set(result.level1_detected);
  for (const c of modelInfo.categories) {
    const values = c.level1.filter((v) => detected.has(v.name));
    if (!values.length) continue;
    const dt = document.createElement("dt");
    dt.textContent = c.name;
    dt.classList.toggle("off", !result.detected.includes(c.name));
    list.appendChild(dt);
    for (const v of values) {
      const dd = document.createElement("dd");
      dd.dataset.value = v.name;
      dd.textContent = `${v.name} (p = ${result.level1[v.name].toFixed(2)})`;
      list.appendChild(dd);
    }
  }
  if (!list.children.length) {
    const dd = document.createElement("dd");
    dd.className = "none";
    dd.textContent = "none above threshold";
    list.appendChild(dd);
  }
}

function highlightField(container, label, text, words) {
  if (label) {
    const span = document.createElement("span");
    span.className = "field";
    span.textContent = label;
    container.appendChild(span);
  }
  const top = Math.max(1e-9, ...words.map((w) => w.weight));
  const sorted = [...words].sort((a, b) => a.start - b.start);
  let at = 0;
  for (const w of sorted) {
    if (w.start < at) continue;
    container.appendChild(document.createTextNode(text.slice(at, w.start)));
    const mark = document.createElement("mark");
    mark.textContent = text.slice(w.start, w.end);
    mark.style.background = `rgba(var(--mark), ${0.25 + 0.75 * (w.weight / top)})`;
    mark.title = `removing it lowers p by ${w.weight.toFixed(3)}`;
    container.appendChild(mark);
    at = w.end;
  }
  container.appendChild(document.createTextNode(text.slice(at)));
}

function renderExplanation() {
  const box = $("highlighted");
  box.replaceChildren();
  if (!lastPrediction) return;
  const argument = lastPrediction.argument;
  const premise = argument.premise ?? argument.text;
  const entry = lastExplanation && lastExplanation.explanations.find((e) => e.category === selectedCategory);
  const words = entry ? entry.words : [];
  $("why-category").textContent = selectedCategory ? `"${selectedCategory}"` : "";
  highlightField(box, argument.conclusion ? "premise" : "", premise, words.filter((w) => w.field === "premise"));
  if (argument.conclusion) {
    highlightField(box, `conclusion (${argument.stance})`, argument.conclusion,
      words.filter((w) => w.field === "conclusion"));
  }
  $("why-note").textContent = !selectedCategory ? "" : entry && words.length
    ? "Highlighted: the words whose removal lowers this category's probability most."
    : "No single word stands out for this category.";
}

async function selectCategory(name) {
  selectedCategory = name;
  renderDetected(lastPrediction.result.detected);
  drawChart(lastPrediction.result.probabilities, lastPrediction.result.detected);
  const known = lastExplanation && lastExplanation.explanations.some((e) => e.category === name);
  if (!known) {
    const body = { argument: lastPrediction.argument, categories: [name], top_k: 5 };
    const extra = await (await api("/v1/explain", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    })).json();
    lastExplanation = lastExplanation || extra;
    lastExplanation.explanations.push(...extra.explanations);
  }
  renderExplanation();
}

// ------------------------------------------------------------------ single argument
$("argument-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if ($("api-key").value) sessionStorage.setItem("valuedetect-key", $("api-key").value);
  const button = $("detect");
  button.disabled = true;
  try {
    const argument = currentArgument();
    setStatus($("status"), "detecting ...");
    if (!modelInfo) await loadModel();
    const prediction = await (await api("/v1/predict", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ arguments: [argument] }),
    })).json();
    const result = prediction.results[0];
    lastPrediction = { argument, result };
    lastExplanation = null;
    selectedCategory = result.detected[0] || null;
    $("result").hidden = false;
    renderDetected(result.detected);
    renderLevel1(result);
    drawChart(result.probabilities, result.detected);
    $("chart").dataset.ready = "1";
    renderExplanation();
    setStatus($("status"), "explaining ...");
    if (result.detected.length) {
      lastExplanation = await (await api("/v1/explain", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ argument, top_k: 5 }),
      })).json();
      renderExplanation();
    }
    setStatus($("status"), `${result.detected.length} of ${modelInfo.categories.length} categories detected`);
  } catch (error) {
    setStatus($("status"), error.message, true);
  } finally {
    button.disabled = false;
  }
});

// ------------------------------------------------------------------ files
function uploadWithProgress(form) {
  // XMLHttpRequest, because fetch cannot report upload progress.
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/jobs");
    if (apiKey()) request.setRequestHeader("Authorization", "Bearer " + apiKey());
    request.upload.onprogress = (e) => {
      if (e.lengthComputable) { $("job-progress").max = e.total; $("job-progress").value = e.loaded; }
      setStatus($("job-status"), "uploading ...");
    };
    request.onload = () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch (_) { /* not JSON */ }
      if (request.status === 401) $("key-row").hidden = false;
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new Error(body && body.error ? body.error.message : `upload failed (${request.status})`));
    };
    request.onerror = () => reject(new Error("the server could not be reached"));
    request.send(form);
  });
}

async function download(url, filename) {
  const blob = await (await api(url)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ------------------------------------------------------------------ a file's counts
// The server counts (GET /v1/jobs/{id}/counts); the page only draws. Colours and fonts are
// attributes, not CSS, so the SVG looks the same when drawn into a PNG.
const PALETTE = ["#2c6e9b", "#e07b39", "#4a9d5b", "#b3415a", "#7b61a8", "#a08a2c", "#3a9fb0", "#8c564b",
  "#d16ba5", "#5f6b7a"];
const CHART_SERIES = PALETTE.length; // the largest groups; the CSV has them all
let corpusJob = null;

function countsUrl(suffix) {
  const group = $("group-column").value;
  return `/v1/jobs/${corpusJob.id}/counts${suffix}` + (group ? `?group=${encodeURIComponent(group)}` : "");
}

function corpusStem() {
  const group = $("group-column").value;
  return (corpusJob.filename.replace(/\.[^.]*$/, "") || "results") + "-counts" + (group ? `-by-${group}` : "");
}

async function showCorpus(job) {
  corpusJob = job;
  const select = $("group-column");
  select.replaceChildren();
  for (const [value, label] of [["", "(the whole file)"], ...job.group_columns.map((c) => [c, c])]) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    select.appendChild(option);
  }
  select.disabled = !job.group_columns.length;
  $("corpus").hidden = false;
  await loadCounts();
}

async function loadCounts() {
  const chart = $("corpus-chart");
  delete chart.dataset.ready;
  const counts = await (await api(countsUrl(""))).json();
  drawCorpusChart(counts);
}

function drawCorpusChart(counts) {
  const chart = $("corpus-chart");
  chart.replaceChildren();
  const shown = counts.series.slice(0, CHART_SERIES);
  const width = 640, labelWidth = 210, plotWidth = width - labelWidth - 60, barHeight = shown.length > 1 ? 6 : 11;
  const rowHeight = shown.length * barHeight + 6, legendHeight = 18 * Math.ceil(shown.length / 3) + 6;
  const shares = shown.map((s) => s.detected.map((d) => (s.texts ? d / s.texts : 0)));
  const top = Math.max(0.01, ...shares.flat());
  const height = legendHeight + counts.categories.length * rowHeight + 24;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("xmlns", SVG);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("font-family", "system-ui, sans-serif");
  svg.setAttribute("font-size", "11");
  const add = svgAdder(svg);
  add("rect", { x: 0, y: 0, width, height, fill: "#ffffff" });
  shown.forEach((s, i) => {
    const x = 2 + (i % 3) * (width / 3), y = 4 + 18 * Math.floor(i / 3);
    add("rect", { x, y: y + 2, width: 10, height: 10, fill: PALETTE[i] });
    const name = counts.group ? (s.name === "" ? "(blank)" : s.name) : s.name;
    add("text", { x: x + 14, y: y + 11, fill: "#333", class: "legend" }, `${name} (${s.texts} texts)`);
  });
  let y = legendHeight;
  counts.categories.forEach((category, j) => {
    add("text", { x: labelWidth - 6, y: y + rowHeight / 2 + 4, "text-anchor": "end", fill: "#333" }, category);
    shown.forEach((s, i) => {
      const share = shares[i][j];
      const bar = add("rect", {
        x: labelWidth, y: y + 3 + i * barHeight, width: Math.max(0.5, (share / top) * plotWidth),
        height: barHeight - 1, fill: PALETTE[i], class: "cbar",
        "data-category": category, "data-series": s.name, "data-count": s.detected[j],
      });
      bar.appendChild(document.createElementNS(SVG, "title")).textContent =
        `${category}, ${s.name}: ${s.detected[j]} of ${s.texts} texts (${(100 * share).toFixed(1)}%)`;
    });
    if (shown.length === 1) {
      const share = shares[0][j];
      add("text", { x: labelWidth + (share / top) * plotWidth + 4, y: y + rowHeight / 2 + 4, fill: "#555" },
        `${shown[0].detected[j]} (${(100 * share).toFixed(0)}%)`);
    }
    y += rowHeight;
  });
  add("line", { x1: labelWidth, x2: labelWidth, y1: legendHeight, y2: y, stroke: "#999" });
  for (const f of [0, 0.5, 1]) {
    add("text", { x: labelWidth + f * plotWidth, y: y + 14, "text-anchor": "middle", fill: "#555" },
      `${(100 * f * top).toFixed(0)}%`);
  }
  chart.appendChild(svg);
  const more = counts.series.length - shown.length;
  $("corpus-note").textContent = "Bars: the share of the texts (of the file, or of each group) in which the " +
    "category was detected." + (more > 0 ? ` The chart shows the ${shown.length} largest groups; the CSV has all ` +
    `${counts.series.length}.` : "");
  chart.dataset.series = String(shown.length);
  chart.dataset.job = corpusJob.id;
  chart.dataset.ready = "1";
}

function saveBlob(blob, filename) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function downloadPng() {
  const svg = $("corpus-chart").querySelector("svg");
  if (!svg) return;
  const scale = 2, width = Number(svg.getAttribute("width")), height = Number(svg.getAttribute("height"));
  const image = new Image();
  image.onload = () => {
    const canvas = document.createElement("canvas");
    canvas.width = width * scale;
    canvas.height = height * scale;
    const context = canvas.getContext("2d");
    context.scale(scale, scale);
    context.drawImage(image, 0, 0, width, height);
    canvas.toBlob((blob) => saveBlob(blob, corpusStem() + ".png"), "image/png");
  };
  image.onerror = () => setStatus($("job-status"), "the chart could not be drawn as an image", true);
  image.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(new XMLSerializer().serializeToString(svg));
}

$("group-column").addEventListener("change", () => {
  loadCounts().catch((error) => setStatus($("job-status"), error.message, true));
});
$("corpus-png").addEventListener("click", downloadPng);
$("corpus-csv").addEventListener("click", () => {
  download(countsUrl(".csv"), corpusStem() + ".csv").catch((error) => setStatus($("job-status"), error.message, true));
});

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if ($("api-key").value) sessionStorage.setItem("valuedetect-key", $("api-key").value);
  const file = $("file").files[0];
  if (!file) return;
  const button = $("upload");
  button.disabled = true;
  $("downloads").replaceChildren();
  $("corpus").hidden = true;
  const bar = $("job-progress");
  bar.hidden = false;
  try {
    const form = new FormData();
    form.append("file", file);
    form.append("text_column", $("text-column").value || "text");
    let job = await uploadWithProgress(form);
    while (job.status === "running" || job.status === "queued") {
      bar.max = Math.max(1, job.total);
      bar.value = job.done;
      setStatus($("job-status"), job.status === "queued"
        ? `waiting for ${job.queue_position + 1} job(s) ahead of this one`
        : `labelling: ${job.done} of ${job.total} arguments`);
      await new Promise((r) => setTimeout(r, 400));
      job = await (await api(`/v1/jobs/${job.id}`)).json();
    }
    if (job.status === "failed") throw new Error(job.error || "the job failed");
    bar.max = 1; bar.value = 1;
    setStatus($("job-status"), `done: ${job.total} arguments. Download:`);
    const stem = job.filename.replace(/\.[^.]*$/, "") || "results";
    const names = { tsv: "run file (.tsv)", csv: "table (.csv)", jsonl: "JSON lines" };
    for (const [fmt, url] of Object.entries(job.downloads)) {
      const link = document.createElement("a");
      link.href = "#";
      link.textContent = names[fmt] || fmt;
      link.dataset.format = fmt;
      link.addEventListener("click", (e) => { e.preventDefault(); download(url, `${stem}-values.${fmt}`); });
      $("downloads").appendChild(link);
    }
    await showCorpus(job);
  } catch (error) {
    bar.hidden = true;
    setStatus($("job-status"), error.message, true);
  } finally {
    button.disabled = false;
  }
});

loadModel().catch((error) => setStatus($("status"), error.message, true));
