// The tricopy console's script: reads the manager's status, each topology's arbiter panel, alerts,
// procedures, backups, the remote copy networks as last collected, and samples, keeps them current from the manager's event stream (a failure
// appears without a reload), acknowledges alerts and runs procedures after a confirmation that says
// what would be lost. Everything from the network is put on the page as text (never as HTML).
'use strict';

const token = new URLSearchParams(location.hash.slice(1)).get('token');
const headers = token ? { authorization: `Bearer ${token}` } : {};
let lastSeq = 0;
let refreshTimer = null;
let status = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function api(path, options) {
  const response = await fetch(path, { ...(options || {}), headers: { ...headers, 'content-type': 'application/json', ...((options && options.headers) || {}) } });
  const text = await response.text();
  const body = text ? JSON.parse(text) : undefined;
  if (!response.ok) throw new Error((body && (body.detail + (body.hint ? ` (${body.hint})` : ''))) || `HTTP ${response.status}`);
  return body;
}

function bytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function lagText(lag) {
  return lag ? `${lag.seconds.toFixed(1)} s / ${bytes(lag.bytes)}` : '-';
}

function fillTable(id, rows) {
  const tbody = document.querySelector(`#${id} tbody`);
  tbody.replaceChildren(...rows.map((cells) => el('tr', {}, cells.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : el('td', {}, c))))));
}

function codeCell(code) {
  return el('td', { class: `code-${code}` }, code);
}

// --- arbiter: automatic failover as the sites' agents reported it ------------------------------
function seconds(ms) {
  return ms === null || ms === undefined ? '-' : `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s`;
}

function arbiterPanel(name, board) {
  const head = el('h4', {}, 'Arbiter');
  if (!board) return el('div', { class: 'arbiter', 'data-arbiter': name }, head, el('p', { class: 'muted' }, 'not available'));
  if (board.error) return el('div', { class: 'arbiter', 'data-arbiter': name }, head, el('p', { class: 'no' }, board.error));
  if (board.failover === 'manual') {
    return el('div', { class: 'arbiter', 'data-arbiter': name }, head, el('p', { class: 'muted' }, 'failover: manual — no arbiter; a person runs the failover'));
  }
  const summary = el('div', { class: 'arbiter-summary' },
    `${board.arbiter || 'arbiter not reported yet'} · holder `, el('b', { class: 'holder', 'data-holder': board.holder || '' }, board.holder || 'nobody known'),
    ` · lease ${seconds(board.leaseMs)} (renew ${seconds(board.renewMs)}, fence margin ${seconds(board.fenceMarginMs)})`,
    ` · failback ${board.failback === 'automatic' ? `automatic after ${seconds(board.failbackDelayMs)}` : 'manual'}`);
  const sites = el('table', { class: 'arbiter-sites' },
    el('thead', {}, el('tr', {}, ['Site', 'Role', 'Agent', 'Failback watch', 'Last decision', 'At'].map((h) => el('th', {}, h)))),
    el('tbody', {}, board.sites.map((x) => el('tr', { 'data-site': x.site },
      el('td', {}, x.site), el('td', {}, x.role), el('td', { class: `agent-${x.state || 'none'}` }, x.state || 'no report'),
      el('td', {}, x.failback || '-'), el('td', {}, x.reason || '-'), el('td', {}, x.at ? x.at.slice(11, 19) : '-')))));
  const decisions = el('ol', { class: 'events arbiter-decisions' }, board.decisions.length === 0
    ? el('li', { class: 'muted' }, 'no decision reported yet')
    : board.decisions.map((d) => el('li', { 'data-kind': d.kind, 'data-site': d.site }, `${d.at.slice(11, 19)} `, el('span', { class: 'kind' }, d.kind), ` ${d.site}: ${d.reason}`)));
  return el('div', { class: 'arbiter', 'data-arbiter': name }, head, summary, sites, el('h5', {}, `Last ${board.decisions.length} decisions`), decisions);
}

async function arbiterBoards(s) {
  const boards = await Promise.all(s.topologies.map((t) => api(`/v1/topologies/${encodeURIComponent(t.name)}/arbiter`).catch((err) => ({ error: String(err.message || err) }))));
  return new Map(s.topologies.map((t, i) => [t.name, boards[i]]));
}

// --- topologies: the three-site picture --------------------------------------------------------
function renderTopologies(s, boards) {
  const box = document.getElementById('topologies');
  if (s.topologies.length === 0) return;
  box.replaceChildren(...s.topologies.map((t) => {
    const sites = t.sites.map((site) => el('div', { class: `site${site.site === t.activeSite ? ' active' : ''}${site.reachable ? '' : ' down'}`, 'data-site': site.site },
      el('div', { class: 'name' }, site.site, site.site === t.activeSite ? ' ● application' : ''),
      el('div', { class: 'muted' }, `${site.role} site — ${site.reachable ? 'reachable' : 'NOT reachable'}`),
      el('div', { class: 'loss' }, 'failover here would lose: ', el('b', {}, site.atRisk.text))));
    const legs = el('table', {}, el('thead', {}, el('tr', {}, ['Copy', 'From', 'To', 'Mode', 'State', 'Code', 'Lag'].map((h) => el('th', {}, h)))),
      el('tbody', {}, t.legs.map((l) => el('tr', {}, el('td', {}, l.pair), el('td', {}, l.from), el('td', {}, l.to), el('td', {}, l.mode), el('td', {}, l.state),
        codeCell(l.code), el('td', {}, l.lagSeconds === null ? '-' : `${l.lagSeconds.toFixed(1)} s${l.lagBytes !== null ? ` / ${bytes(l.lagBytes)}` : ''}`)))));
    const actions = el('div', { class: 'actions' },
      t.sites.filter((site) => site.site !== t.activeSite).map((site) =>
        el('button', { class: 'danger', 'data-action': `failover-${site.site}`, onclick: () => confirmProcedure(t, 'failover', site) }, `Fail over to ${site.site}`)),
      t.activeSite && t.sites.find((x) => x.role === 'primary').site !== t.activeSite
        ? el('button', { 'data-action': 'failback', onclick: () => confirmProcedure(t, 'failback', t.sites.find((x) => x.role === 'primary')) }, 'Fail back') : null,
      el('button', { 'data-action': 'repair', onclick: () => confirmProcedure(t, 'repair', null) }, 'Repair'));
    return el('div', { class: 'topology', 'data-topology': t.name },
      el('div', { class: 'topology-head' }, el('h3', {}, `${t.name} (${t.layout})`),
        el('span', { class: t.healthy ? 'code-PAIR' : 'code-PSUE' }, t.healthy ? 'healthy' : 'NOT fully protected'),
        el('span', { class: 'muted' }, t.activeSite ? `application at ${t.activeSite}` : 'no active site')),
      el('div', { class: 'sites' }, sites), legs, actions, arbiterPanel(t.name, boards.get(t.name)));
  }));
}

function confirmProcedure(t, procedure, site) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = procedure === 'repair'
    ? `Repair ${t.name}: restore protection with the sites that answer`
    : `${procedure === 'failover' ? 'Fail over' : 'Fail back'} ${t.name} to ${site.site}`;
  document.getElementById('confirm-loss').textContent = site
    ? `What a move to ${site.site} would lose now: ${site.atRisk.text}.` : 'The application stays where it runs; nothing is lost.';
  dialog.returnValue = '';
  dialog.onclose = () => {
    if (dialog.returnValue !== 'ok') return;
    const body = { topology: t.name, procedure, startedBy: 'console', ...(site ? { to: site.site } : {}), wait: false };
    api('/v1/procedures', { method: 'POST', body: JSON.stringify(body) }).then(followRun, (err) => showRunError(err));
  };
  dialog.showModal();
}

function showRunError(err) {
  document.getElementById('procedure-run').hidden = false;
  document.getElementById('procedure-title').textContent = 'The procedure did not start';
  document.getElementById('procedure-output').textContent = String(err.message || err);
}

function followRun(run) {
  document.getElementById('procedure-run').hidden = false;
  document.getElementById('procedure-title').textContent = `${run.procedure} ${run.topology}${run.args.to ? ` → ${run.args.to}` : ''} (${run.id}): running`;
  const out = document.getElementById('procedure-output');
  out.textContent = '';
  const source = new EventSource(`/v1/procedures/${encodeURIComponent(run.id)}/output`);
  source.addEventListener('line', (e) => { out.textContent += `${JSON.parse(e.data)}\n`; out.scrollTop = out.scrollHeight; });
  source.addEventListener('end', (e) => {
    const end = JSON.parse(e.data);
    document.getElementById('procedure-title').textContent = `${run.procedure} ${run.topology}${run.args.to ? ` → ${run.args.to}` : ''} (${run.id}): ${end.state}`;
    document.getElementById('procedure-title').setAttribute('data-state', end.state);
    source.close();
    scheduleRefresh();
  });
  source.onerror = () => source.close();
}

// --- tables -----------------------------------------------------------------------------------
function renderStatus(s, boards) {
  status = s;
  const health = document.getElementById('health');
  health.textContent = s.healthy ? 'healthy' : 'attention';
  health.className = `badge ${s.healthy ? 'ok' : 'bad'}`;
  document.getElementById('manager-info').textContent = `${s.manager.url} · ${s.manager.store} store · ${s.manager.leader ? 'leader' : `follower of ${s.manager.leaderUrl || '?'}`}`;
  renderTopologies(s, boards);
  fillTable('nodes', s.nodes.map((n) => [n.name, n.site, el('td', { class: n.reachable ? '' : 'no' }, n.reachable ? 'yes' : 'NO'), n.url, n.lastSeenAt || '-']));
  fillTable('pairs', s.pairs.map((p) => [p.node, p.name, p.role, p.volume, `${p.peer.node}:${p.peer.volume}`, p.mode, p.state, codeCell(p.code), lagText(p.lag),
    p.code === 'PAIR' ? '' : p.reason]));
  fillTable('volumes', s.volumes.map((v) => [v.node, v.name, bytes(v.sizeBytes), bytes(v.allocatedBytes), v.clients.length]));
  fillTable('groups', s.groups.map((g) => [g.node, g.group, g.role, g.peer, lagText(g.lag), g.journal ? `${bytes(g.journal.usedBytes)} of ${bytes(g.journal.capacityBytes)}` : '-']));
}

function renderAlerts(alerts) {
  document.getElementById('alert-count').textContent = alerts.filter((a) => a.state === 'open').length ? `${alerts.filter((a) => a.state === 'open').length} open` : '';
  fillTable('alerts', alerts.map((a) => [a.id, el('td', { class: `state-${a.state}` }, a.state), a.severity, a.kind, a.subject, a.reportedBy || '-', a.openedAt, a.message,
    a.state === 'open' ? el('button', { 'data-ack': a.id, onclick: () => ack(a.id) }, 'Acknowledge') : '']));
}

function ack(id) {
  api(`/v1/alerts/${encodeURIComponent(id)}/ack`, { method: 'POST', body: JSON.stringify({ by: 'console' }) }).then(scheduleRefresh, (err) => alert(err.message));
}

function renderProcedures(runs) {
  fillTable('procedures', runs.slice(0, 20).map((r) => [r.id, r.topology, r.procedure, r.args.to || '-', el('td', { class: r.state === 'failed' ? 'no' : '' }, r.state), r.startedAt, r.startedBy]));
}

// --- backups: policies with their next run, running jobs with progress, recent jobs with result ---
function progressCell(job) {
  if (job.bytesTotal === null) return el('td', {}, job.waitingBehind ? `waiting for a drive (${job.waitingBehind} ahead)` : 'starting');
  const pct = job.bytesTotal === 0 ? 100 : Math.floor((job.bytesCopied / job.bytesTotal) * 100);
  return el('td', { class: 'progress' }, el('progress', { max: 100, value: pct }), ` ${pct}% (${bytes(job.bytesCopied)} of ${bytes(job.bytesTotal)})`);
}

function renderBackups(policies, jobs) {
  fillTable('backup-policies', policies.map((p) => [p.name, p.volume, p.node, p.repo, p.schedule, p.incremental ? 'incremental' : 'full', p.keep, p.nextRunAt || '-']));
  const running = jobs.filter((j) => j.state === 'running');
  fillTable('backup-running', running.map((j) => [j.id, j.kind, j.policy || '-', j.volume, j.startedAt, progressCell(j)]));
  fillTable('backup-jobs', jobs.filter((j) => j.state !== 'running').slice(0, 20).map((j) => [j.id, j.kind, j.policy || '-', j.kind === 'restore' ? `${j.volume} → ${j.target}` : j.volume,
    j.image || '-', j.startedAt, j.endedAt || '-', bytes(j.bytesCopied), el('td', { class: j.state === 'succeeded' ? '' : 'no', 'data-state': j.state }, j.state),
    j.error ? `${j.error}${j.hint ? ` — ${j.hint}` : ''}` : '']));
}

// --- remote copy networks: each relay, each order's counters 732/733/734, each pair's 725/727 ----
async function renderNetworks() {
  const { networks } = await api('/v1/networks');
  const docs = await Promise.all(networks.map((n) => api(`/v1/networks/${encodeURIComponent(n.name)}/status`)));
  document.getElementById('networks-empty').hidden = docs.length > 0;
  const relays = docs.flatMap((d) => d.relays.map((r) => ({ network: d.network, version: d.version, relay: r })));
  fillTable('network-relays', relays.map(({ network, version, relay: r }) => [network, r.name, r.role,
    el('td', { class: r.reachable ? '' : 'no' }, r.reachable ? 'yes' : `no: ${r.error || 'not collected yet'}`),
    r.status ? (r.status.configVersion === version ? r.status.configVersion : `${r.status.configVersion || '-'} (manager: ${version || '-'})`) : '-',
    r.status ? r.status.links.map((l) => `${l.kind === 'storage' ? `${l.peer} as ${l.as}` : l.peer} ${l.up ? (l.tls ? 'up (tls)' : 'up') : 'down'}`).join(', ') || '-' : '-',
    r.collectedAt || '-']));
  const withStatus = relays.filter((x) => x.relay.status);
  fillTable('network-orders', withStatus.flatMap(({ network, relay }) => relay.status.orders.map((o) => [network, relay.name, o.id, o.side, `${o.from} → ${o.to}`,
    el('td', { class: o.state === 'active' ? '' : 'no', 'data-state': o.state }, o.state), o.side === 'source' ? o.generated : '-', o.side === 'target' ? o.reflected : '-',
    o.side === 'source' ? o.deleted : '-', o.inFlight, `${bytes(o.log.bytes)} / ${bytes(o.log.capacityBytes)} (${o.log.entries})`,
    o.ackDelayMs === null ? '-' : `${o.ackDelayMs} ms`, o.reflectionDelayMs === null ? '-' : `${o.reflectionDelayMs} ms`, o.retransmissions])));
  fillTable('network-pairs', withStatus.flatMap(({ network, relay }) => relay.status.pairs.map((p) => [network, relay.name, p.name, p.order, p.side,
    `${p.source} → ${p.target}`, el('td', { class: p.state === 'failure-suspend' ? 'no' : '', 'data-state': p.state }, p.state), bytes(p.differentialBytes)])));
  await renderNetworkCharts(networks.map((n) => n.name));
}

// Per order: the source edge's backlog (entries not yet reflected) and the target edge's reflection delay.
async function renderNetworkCharts(names) {
  const since = Date.now() - 3600_000;
  const lists = await Promise.all(names.map((n) => api(`/v1/networks/${encodeURIComponent(n)}/samples?since=${since}`)));
  const charts = [];
  for (const s of groupBy(lists.flatMap((l) => l.samples), (x) => `${x.network} ${x.order} ${x.edge} ${x.side}`).values()) {
    const first = s[0];
    const points = (f) => s.map((x) => ({ t: Date.parse(x.time), v: f(x) }));
    if (first.side === 'source') charts.push(sparkline(points((x) => x.inFlight), `in flight ${first.order} at ${first.edge} (${first.network})`, 'entries'));
    else charts.push(sparkline(points((x) => x.reflectionDelayMs || 0), `reflection delay ${first.order} at ${first.edge} (${first.network})`, 'ms'));
  }
  document.getElementById('network-charts').replaceChildren(...(charts.length ? charts.slice(0, 12)
    : [el('p', { class: 'muted' }, 'No samples yet (the manager collects each relay every --sample-interval).')]));
}

function groupBy(items, key) {
  const out = new Map();
  for (const item of items) {
    const k = key(item);
    if (!out.has(k)) out.set(k, []);
    out.get(k).push(item);
  }
  return out;
}

// --- charts: lag and I/O over time (samples kept by the manager) -------------------------------
function sparkline(points, title, unit) {
  const w = 300;
  const h = 60;
  const values = points.map((p) => p.v);
  const max = Math.max(1e-9, ...values);
  const t0 = points.length ? points[0].t : 0;
  const span = points.length > 1 ? points[points.length - 1].t - t0 : 1;
  const coords = points.map((p) => `${(((p.t - t0) / span) * w).toFixed(1)},${(h - (p.v / max) * (h - 4) - 2).toFixed(1)}`).join(' ');
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', coords);
  line.setAttribute('fill', 'none');
  line.setAttribute('stroke', '#0969da');
  line.setAttribute('stroke-width', '1.5');
  svg.append(line);
  const last = values.length ? values[values.length - 1] : null;
  return el('div', { class: 'chart' }, el('div', { class: 'title' }, `${title}: ${last === null ? '-' : `${last.toFixed(2)} ${unit}`}`), svg);
}

async function renderCharts() {
  const since = Date.now() - 3600_000;
  const { samples } = await api(`/v1/samples?since=${since}`);
  const series = groupBy(samples, (s) => `${s.node} ${s.subject}`);
  const charts = [];
  for (const [key, list] of series) {
    list.sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
    if (key.includes('group:')) charts.push(sparkline(list.map((s) => ({ t: Date.parse(s.time), v: s.lagSeconds || 0 })), `lag ${key}`, 's'));
    else charts.push(sparkline(list.map((s) => ({ t: Date.parse(s.time), v: s.iops || 0 })), `IOPS ${key}`, '/s'));
  }
  const box = document.getElementById('charts');
  box.replaceChildren(...(charts.length ? charts.slice(0, 12) : [el('p', { class: 'muted' }, 'No samples yet (the manager scrapes each node every --sample-interval).')]));
}

// --- live updates -----------------------------------------------------------------------------
function addEvent(e, fresh) {
  const list = document.getElementById('events');
  const item = el('li', { class: fresh ? 'fresh' : '', 'data-kind': e.kind }, `${e.time.slice(11, 19)} `, el('span', { class: 'kind' }, e.kind), ` ${e.node || 'manager'} · ${e.subject}: ${e.reason}`);
  list.prepend(item);
  while (list.children.length > 200) list.lastChild.remove();
}

async function refresh() {
  refreshTimer = null;
  try {
    const [s, a, p, bp, bj] = await Promise.all([api('/v1/status'), api('/v1/alerts?all=true'), api('/v1/procedures'),
      api('/v1/backup/policies'), api('/v1/backup/jobs?limit=50')]);
    renderStatus(s, await arbiterBoards(s));
    renderAlerts(a.alerts.slice(0, 50));
    renderProcedures(p.runs);
    renderBackups(bp.policies, bj.jobs);
    await renderNetworks();
    await renderCharts();
  } catch (err) {
    document.getElementById('health').textContent = `manager unreachable: ${err.message}`;
    document.getElementById('health').className = 'badge bad';
  }
}

function scheduleRefresh() {
  if (refreshTimer === null) refreshTimer = setTimeout(refresh, 250);
}

async function start() {
  const { events } = await api(`/v1/events?since=${Date.now() - 3600_000}&limit=200`);
  for (const e of events) addEvent(e, false);
  lastSeq = events.length ? events[events.length - 1].seq : 0;
  await refresh();
  // Counters move without events: the networks panel follows the manager's collections.
  setInterval(() => renderNetworks().catch(() => undefined), 3000);
  // EventSource cannot send headers: with a token, the console refreshes on a timer instead.
  if (token) {
    setInterval(refresh, 5000);
    return;
  }
  const source = new EventSource(`/v1/events?stream=true&afterSeq=${lastSeq}`);
  const live = document.getElementById('live');
  source.onopen = () => { live.textContent = '● live'; };
  source.onerror = () => { live.textContent = '○ reconnecting'; };
  source.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    if (e.seq <= lastSeq) return;
    lastSeq = e.seq;
    addEvent(e, true);
    scheduleRefresh();
  };
}

start().catch((err) => {
  document.getElementById('health').textContent = `cannot load: ${err.message}`;
  document.getElementById('health').className = 'badge bad';
});
