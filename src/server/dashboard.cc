#include "server/dashboard.h"

namespace slimkv::server {

// Plain HTML and JavaScript, no build step and nothing fetched from elsewhere. It polls
// /stats twice a second. Colours are exact fills (no gradients) so the screenshot test can
// find them: pool free #334155, prefix-cache blocks #64748b, sequences from PALETTE.
const char* DashboardHtml() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>slimkv</title>
<style>
  body { margin: 0; background: #0f172a; color: #e2e8f0; font: 14px system-ui, sans-serif; }
  header { padding: 14px 20px; background: #1e293b; display: flex; gap: 24px; align-items: baseline; }
  header h1 { margin: 0; font-size: 20px; color: #38bdf8; }
  header span { color: #94a3b8; }
  main { padding: 16px 20px; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
  .card { background: #1e293b; border-radius: 6px; padding: 10px 12px; }
  .card .v { font-size: 20px; font-weight: 600; color: #f8fafc; white-space: nowrap; }
  .card .k { color: #94a3b8; font-size: 12px; }
  h2 { font-size: 15px; margin: 20px 0 8px; color: #cbd5e1; }
  canvas { display: block; width: 100%; background: #1e293b; border-radius: 6px; }
  table { border-collapse: collapse; width: 100%; }
  td, th { padding: 4px 8px; text-align: right; border-bottom: 1px solid #1e293b; }
  th { color: #94a3b8; font-weight: 500; }
  td:first-child, th:first-child { text-align: left; }
  .legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }
  #err { color: #f87171; }
</style>
</head>
<body>
<header><h1>slimkv</h1><span id="model">-</span><span id="format">-</span><span id="err"></span></header>
<main>
  <div class="cards">
    <div class="card"><div class="v" id="kv_used">-</div><div class="k">KV pool used / budget</div></div>
    <div class="card"><div class="v" id="bpt">-</div><div class="k">KV bytes per token</div></div>
    <div class="card"><div class="v" id="hit">-</div><div class="k">prefix hit rate (requests / tokens)</div></div>
    <div class="card"><div class="v" id="tps">-</div><div class="k">generated tokens/s</div></div>
    <div class="card"><div class="v" id="seqs">-</div><div class="k">running / waiting / preempted</div></div>
    <div class="card"><div class="v" id="ttft">-</div><div class="k">time to first token p50 / p99</div></div>
    <div class="card"><div class="v" id="itl">-</div><div class="k">inter-token latency p50 / p99</div></div>
    <div class="card"><div class="v" id="done">-</div><div class="k">finished / cancelled / failed / rejected</div></div>
  </div>
  <h2>KV pool occupancy by sequence
    <span class="legend"><span style="background:#64748b"></span>prefix cache
    <span style="background:#334155"></span>free</span></h2>
  <canvas id="pool" height="56"></canvas>
  <h2>Throughput (generated tokens/s, last 2 minutes)</h2>
  <canvas id="tput" height="120"></canvas>
  <h2>Running sequences</h2>
  <table><thead><tr><th>request</th><th>phase</th><th>prompt</th><th>cached</th><th>generated</th>
    <th>KV tokens</th><th>KV blocks</th><th>KV MiB</th></tr></thead><tbody id="rows"></tbody></table>
</main>
<script>
const PALETTE = ['#38bdf8', '#a78bfa', '#f472b6', '#fb923c', '#facc15', '#4ade80', '#2dd4bf', '#f87171'];
const history = [];
const MiB = 1024 * 1024;
function fmtS(s) { return s >= 1 ? s.toFixed(2) + ' s' : (s * 1000).toFixed(0) + ' ms'; }
function sizeCanvas(c) {
  const w = c.clientWidth, h = Number(c.getAttribute('height'));
  if (c.width !== w) c.width = w;
  return [w, h];
}
function drawPool(st) {
  const c = document.getElementById('pool'), g = c.getContext('2d');
  const [w, h] = sizeCanvas(c);
  g.fillStyle = '#334155';
  g.fillRect(0, 0, w, h);
  const budget = Math.max(1, st.kv_budget_bytes);
  let x = 0, seqBytes = 0;
  for (const q of st.sequences) {
    const bw = q.kv_bytes / budget * w;
    g.fillStyle = PALETTE[q.id % PALETTE.length];
    g.fillRect(x, 0, Math.max(bw, 2), h);
    x += bw;
    seqBytes += q.kv_bytes;
  }
  const cached = Math.max(0, st.kv_bytes_used - seqBytes);
  g.fillStyle = '#64748b';
  g.fillRect(x, 0, cached / budget * w, h);
}
function drawThroughput() {
  const c = document.getElementById('tput'), g = c.getContext('2d');
  const [w, h] = sizeCanvas(c);
  g.fillStyle = '#1e293b';
  g.fillRect(0, 0, w, h);
  const top = Math.max(1, ...history) * 1.1;
  g.strokeStyle = '#38bdf8';
  g.lineWidth = 2;
  g.beginPath();
  history.forEach((v, i) => {
    const px = w - (history.length - 1 - i) * (w / 240), py = h - 4 - v / top * (h - 8);
    if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
  });
  g.stroke();
  g.fillStyle = '#94a3b8';
  g.fillText(top.toFixed(0) + ' tok/s', 6, 14);
}
function render(st) {
  document.getElementById('model').textContent = st.model;
  document.getElementById('format').textContent = 'KV ' + st.kv_format;
  document.getElementById('kv_used').textContent =
    (st.kv_bytes_used / MiB).toFixed(1) + ' / ' + (st.kv_budget_bytes / MiB).toFixed(0) + ' MiB';
  document.getElementById('bpt').textContent = st.kv_bytes_per_token.toFixed(0) + ' B';
  document.getElementById('hit').textContent =
    (100 * st.prefix_hit_rate).toFixed(0) + '% / ' + (100 * st.prefix_token_hit_rate).toFixed(0) + '%';
  document.getElementById('tps').textContent = st.generated_tokens_per_s.toFixed(1);
  document.getElementById('seqs').textContent = st.running + ' / ' + st.waiting + ' / ' + st.preempted;
  document.getElementById('ttft').textContent = fmtS(st.ttft_p50) + ' / ' + fmtS(st.ttft_p99);
  document.getElementById('itl').textContent = fmtS(st.itl_p50) + ' / ' + fmtS(st.itl_p99);
  document.getElementById('done').textContent =
    st.finished + ' / ' + st.cancelled + ' / ' + st.failed + ' / ' + st.rejected;
  history.push(st.generated_tokens_per_s);
  while (history.length > 240) history.shift();
  drawPool(st);
  drawThroughput();
  const rows = st.sequences.map(q =>
    '<tr><td><span style="color:' + PALETTE[q.id % PALETTE.length] + '">&#9632;</span> ' + q.id + '</td><td>' +
    q.phase + '</td><td>' + q.prompt_tokens + '</td><td>' + q.cached_tokens + '</td><td>' + q.generated_tokens +
    '</td><td>' + q.kv_tokens + '</td><td>' + q.kv_blocks + '</td><td>' + (q.kv_bytes / MiB).toFixed(2) + '</td></tr>');
  document.getElementById('rows').innerHTML = rows.join('');
}
async function poll() {
  try {
    const r = await fetch('/stats', {cache: 'no-store'});
    render(await r.json());
    document.getElementById('err').textContent = '';
  } catch (e) {
    document.getElementById('err').textContent = 'server unreachable';
  }
  setTimeout(poll, 500);
}
poll();
</script>
</body>
</html>
)HTML";
}

}  // namespace slimkv::server
