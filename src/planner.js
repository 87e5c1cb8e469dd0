// The planner page: reads the controls, asks POST /v1/plan (the same code
// as `earshot plan`), shows the answer and draws the cost curve as inline
// SVG. No libraries, nothing from other origins (the page's CSP allows
// only this origin's script, style and fetches).
'use strict';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
// The page's default throughput; left out of the request while unchanged
// so the plan says they are assumed.
const DEFAULT_SPEECH = 46;
const DEFAULT_LLM = 495;

/** Slider position 0–1000 → tasks per month, 1K–1M on a log scale,
 *  rounded to two significant digits (50,000 rather than 49,888). */
function tasksFrom(v) {
  const t = Math.pow(10, 3 + (3 * v) / 1000);
  const unit = Math.pow(10, Math.floor(Math.log10(t)) - 1);
  return Math.round(t / unit) * unit;
}

function group(n) {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function usd(v) {
  return (v < 0 ? '-$' : '$') + group(Math.abs(v));
}

function request() {
  const body = {
    tasks_per_month: tasksFrom(Number($('tasks').value)),
    avg_minutes: Number($('minutes').value),
    instance: $('instance').value,
    spot_share: Number($('spot').value) / 100,
    active_hours_per_day: Number($('hours').value),
    peak_to_average: Number($('peak').value),
  };
  const speech = Number($('speech-tp').value);
  const llm = Number($('llm-tp').value);
  if (speech !== DEFAULT_SPEECH || llm !== DEFAULT_LLM) {
    body.throughput = {
      speech_audio_seconds_per_second: speech,
      llm_decode_tokens_per_second: llm,
      source: 'given on the planner page',
    };
  }
  return body;
}

function showInputs(body) {
  $('tasks-out').textContent = group(body.tasks_per_month);
  $('minutes-out').textContent = body.avg_minutes.toFixed(1);
  $('spot-out').textContent = Math.round(body.spot_share * 100) + '%';
}

let sequence = 0;
let timer = null;

function schedule() {
  showInputs(request());
  $('out').dataset.state = 'loading';
  clearTimeout(timer);
  timer = setTimeout(update, 60);
}

async function update() {
  const body = request();
  const mine = ++sequence;
  let plan;
  let failure = null;
  try {
    const r = await fetch('/v1/plan', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const j = await r.json();
    if (r.ok) {
      plan = j;
    } else {
      failure = (j.error && j.error.message) || 'HTTP ' + r.status;
    }
  } catch (e) {
    failure = String(e);
  }
  if (mine !== sequence) {
    return; // a newer request is on its way
  }
  const out = $('out');
  out.dataset.request = JSON.stringify(body);
  if (failure) {
    $('error').textContent = failure;
    $('error').hidden = false;
    out.dataset.state = 'error';
    return;
  }
  $('error').hidden = true;
  render(plan);
  out.dataset.state = 'ready';
}

function render(p) {
  $('phase').textContent = p.phase;
  $('speech-gpus').textContent = String(p.speech_gpus);
  $('llm-gpus').textContent = String(p.llm_gpus);
  $('fleet').textContent = p.shared_gpu
    ? 'one GPU runs both engines'
    : p.gpus + ' GPUs on ' + p.self_hosted.instances + ' × ' + p.prices.instance +
      (p.colocated ? ' (both engines on each)' : '');
  $('self-usd').textContent = usd(p.self_hosted.monthly_usd);
  $('managed-usd').textContent = usd(p.managed.monthly_usd);
  $('managed-split').textContent =
    'Transcribe ' + usd(p.managed.speech_usd) + ' + Bedrock ' + usd(p.managed.summary_usd);
  $('hybrid-usd').textContent = usd(p.hybrid.monthly_usd);
  $('hybrid-split').textContent =
    p.hybrid.gpus + ' GPU' + (p.hybrid.gpus === 1 ? '' : 's') + ' kept, ' +
    (p.hybrid.managed_share * 100).toFixed(1) + '% of tasks managed';
  $('savings').textContent = p.savings_pct.toFixed(1) + '%';
  $('crossover').textContent = p.crossover_tasks_per_month === null
    ? 'none up to 1,000,000,000 tasks/month'
    : group(p.crossover_tasks_per_month) + ' tasks/month';
  const notes = ['Prices of ' + p.prices.date + ' (' + p.prices.region + ')', 'Throughput: ' + p.throughput_source]
    .concat(p.warnings.map((w) => 'Note: ' + w));
  $('notes').textContent = notes.join('. ') + '.';
  draw(p);
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) {
    e.setAttribute(k, String(v));
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

function short(v, money) {
  const p = money ? '$' : '';
  if (v >= 1e6) return p + (v / 1e6) + 'M';
  if (v >= 1e3) return p + (v / 1e3) + 'K';
  return p + v;
}

/** Log–log chart of the three cost curves, the crossover and the
 *  current volume. */
function draw(p) {
  const svg = $('chart');
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const curve = p.cost_curve;
  if (!curve || curve.length < 2) return;
  const W = 900, H = 420, L = 70, R = 20, T = 16, B = 40;
  const x0 = Math.log10(curve[0].tasks_per_month);
  const x1 = Math.log10(curve[curve.length - 1].tasks_per_month);
  let lo = Infinity, hi = 0;
  for (const c of curve) {
    for (const v of [c.managed_usd, c.self_hosted_usd, c.hybrid_usd]) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  const y0 = Math.floor(Math.log10(Math.max(lo, 1)));
  const y1 = Math.ceil(Math.log10(hi));
  const X = (v) => L + ((Math.log10(v) - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => T + (1 - (Math.log10(Math.max(v, 1)) - y0) / (y1 - y0)) * (H - T - B);
  for (let e = Math.ceil(x0); e <= x1; e++) {
    const x = X(Math.pow(10, e));
    svg.appendChild(el('line', { class: 'grid', x1: x, x2: x, y1: T, y2: H - B }));
    svg.appendChild(el('text', { class: 'axis', x: x, y: H - B + 18, 'text-anchor': 'middle' }, short(Math.pow(10, e))));
  }
  for (let e = y0; e <= y1; e++) {
    for (const m of [1, 3]) {
      const v = m * Math.pow(10, e);
      if (Math.log10(v) > y1) continue;
      const y = Y(v);
      svg.appendChild(el('line', { class: 'grid', x1: L, x2: W - R, y1: y, y2: y }));
      svg.appendChild(el('text', { class: 'axis', x: L - 8, y: y + 4, 'text-anchor': 'end' }, short(v, true)));
    }
  }
  svg.appendChild(el('text', { class: 'axis', x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle' }, 'tasks per month'));
  const line = (pts) => pts.map((q) => X(q[0]).toFixed(1) + ',' + Y(q[1]).toFixed(1)).join(' ');
  const steps = [];
  curve.forEach((c, i) => {
    if (i > 0) steps.push([c.tasks_per_month, curve[i - 1].self_hosted_usd]);
    steps.push([c.tasks_per_month, c.self_hosted_usd]);
  });
  svg.appendChild(el('polyline', { class: 'series managed', points: line(curve.map((c) => [c.tasks_per_month, c.managed_usd])) }));
  svg.appendChild(el('polyline', { class: 'series self', points: line(steps) }));
  svg.appendChild(el('polyline', { class: 'series hybrid', points: line(curve.map((c) => [c.tasks_per_month, c.hybrid_usd])) }));
  const here = p.input.tasks_per_month;
  if (Math.log10(here) >= x0 && Math.log10(here) <= x1) {
    svg.appendChild(el('line', { class: 'here', x1: X(here), x2: X(here), y1: T, y2: H - B }));
    const right = X(here) > W - R - 120;
    svg.appendChild(el('text', {
      class: 'label', x: X(here) + (right ? -4 : 4), y: T + 12, 'text-anchor': right ? 'end' : 'start',
    }, 'you: ' + group(here) + ' tasks'));
  }
  const c = p.crossover_tasks_per_month;
  if (c !== null && Math.log10(c) >= x0 && Math.log10(c) <= x1) {
    const y = Y(p.self_hosted.monthly_usd > 0 ? curve.find((q) => q.tasks_per_month >= c).managed_usd : 1);
    svg.appendChild(el('line', { class: 'cross', x1: X(c), x2: X(c), y1: T, y2: H - B }));
    svg.appendChild(el('circle', { cx: X(c), cy: y, r: 5, fill: 'none', stroke: '#222', 'stroke-width': 2 }));
    svg.appendChild(el('text', { class: 'label', x: X(c) + 8, y: y + 18 }, 'crossover ≈ ' + group(c)));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  for (const id of ['tasks', 'minutes', 'spot', 'speech-tp', 'llm-tp', 'hours', 'peak']) {
    $(id).addEventListener('input', schedule);
  }
  $('instance').addEventListener('change', schedule);
  schedule();
});
