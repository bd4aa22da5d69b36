// The roistat-leads console. Every value that comes from a lead, a request or a
// consumer is put on the page as text (textContent), never as markup.
'use strict';

const viewRoot = () => document.getElementById('view');
const state = { meta: null, integration: '', feed: null, timer: null };

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'text') node.textContent = String(value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

// A time in the browser's zone, UTC on hover.
function when(iso) {
  if (!iso) return el('span', { class: 'muted', text: '—' });
  const date = new Date(iso);
  return el('time', { datetime: iso, title: date.toISOString(), text: date.toLocaleString() });
}

function copyButton(value) {
  return el('button', {
    type: 'button', class: 'copy', 'aria-label': 'Copy ' + value, text: 'copy',
    onclick: () => { if (navigator.clipboard) navigator.clipboard.writeText(value).catch(() => {}); },
  });
}

function withCopy(value) {
  if (value === null || value === undefined || value === '') return el('span', { class: 'muted', text: '—' });
  return el('span', {}, el('code', { text: value }), copyButton(String(value)));
}

function leadLink(integration, leadId) {
  if (!leadId) return el('span', { class: 'muted', text: '—' });
  const href = '#/lead/' + encodeURIComponent(integration) + '/' + encodeURIComponent(leadId);
  return el('span', {}, el('a', { href, text: leadId }), copyButton(leadId));
}

function table(headers, rows) {
  return el('div', { class: 'scroll' },
    el('table', {},
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, rows)));
}

function errorBox(message) {
  return el('p', { class: 'error', role: 'alert', text: message });
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: 'same-origin' }, options || {}));
  if (response.status === 401) {
    window.location.assign('/login');
    throw new Error('log in first');
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || ('the service answered ' + response.status));
  return body;
}

function scopeQuery() {
  return 'integration=' + encodeURIComponent(state.integration);
}

// One line of the live view or of a lead's story.
function eventRow(event, fresh) {
  return el('tr', { class: fresh ? 'new' : null, 'data-sequence': event.sequence },
    el('td', {}, when(event.time)),
    el('td', {}, el('span', { class: 'kind', text: event.kind }), lossyBadge(event)),
    el('td', { text: event.source || '' }),
    el('td', {}, event.name || '', event.returning ? el('span', { class: 'kind returning', title: 'This person had a lead before', text: 'returning' }) : null),
    el('td', { text: event.phone || '' }),
    el('td', { text: event.title || '' }),
    el('td', {}, leadLink(event.integration, event.resolved_lead_id || event.lead_id)),
    el('td', {}, withCopy(event.order_id)));
}

// Marks an event whose request was read with losses (kept whole beside it).
function lossyBadge(event) {
  return event.decoding_lossy
    ? el('span', { class: 'kind lossy', title: (event.decoding_notes || []).join('\n'), text: 'lossy' })
    : null;
}

// How a lossy request was read: the notes, repeated names, and the request as it came.
function decodingSection(event) {
  if (!event.decoding_lossy) return null;
  const raw = event.raw_request || { query: '', body: '', content_type: '' };
  return el('section', { class: 'decoding' },
    el('h2', { text: 'Read with losses: the request as it came' }),
    el('ul', {}, (event.decoding_notes || []).map((note) => el('li', { text: note }))),
    (event.repeated_parameters || []).length
      ? table(['Repeated name', 'Value (in the order sent)'], event.repeated_parameters.map(([k, v]) =>
        el('tr', {}, el('td', {}, el('code', { text: k })), el('td', { text: v }))))
      : null,
    fieldList([['Content type', raw.content_type]]),
    el('h3', { text: 'Query' }), el('pre', { class: 'raw', text: raw.query }),
    el('h3', { text: 'Body' }), el('pre', { class: 'raw', text: raw.body }));
}

const EVENT_HEADERS = ['Time', 'Kind', 'Source', 'Name', 'Phone', 'Title', 'Lead', 'Order id'];

function stopUpdates() {
  if (state.feed) { state.feed.close(); state.feed = null; }
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
}

// Live: events as they are committed, newest first, without reloading.
function showLive(root) {
  const status = el('span', { class: 'status', text: 'connecting…' });
  const body = el('tbody', {});
  root.append(
    el('h1', {}, 'Live', status),
    el('div', { class: 'scroll' }, el('table', {},
      el('thead', {}, el('tr', {}, EVENT_HEADERS.map((h) => el('th', { scope: 'col', text: h })))),
      body)));
  const feed = new EventSource('/api/live?' + scopeQuery());
  state.feed = feed;
  let backlog = true;
  feed.onopen = () => { status.textContent = 'live'; status.className = 'status live'; };
  feed.onerror = () => { status.textContent = 'reconnecting…'; status.className = 'status'; };
  feed.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (body.querySelector('tr[data-sequence="' + event.sequence + '"]')) return;
    body.prepend(eventRow(event, !backlog));
    while (body.children.length > 200) body.lastElementChild.remove();
  };
  // Events of the backlog arrive at once; later ones are highlighted.
  setTimeout(() => { backlog = false; }, 1500);
}

const FIELDS = [
  ['phone', 'Phone'], ['person', 'Person (any phone form, or e-mail)'], ['email', 'E-mail'], ['name', 'Name (start)'],
  ['lead_id', 'Lead id'], ['order_id', 'Order or deal id'], ['visit', 'Visit'],
];

// Search: the terms travel in the request body.
function showSearch(root) {
  const field = el('select', { id: 'search-field', name: 'field' },
    FIELDS.map(([value, label]) => el('option', { value, text: label })));
  const term = el('input', { id: 'search-term', name: 'term', type: 'search', required: true, autocomplete: 'off' });
  const results = el('div', { id: 'search-results' });
  let cursor = null;
  let rows = null;
  const run = async (more) => {
    if (!more) { results.replaceChildren(); rows = null; cursor = null; }
    if (field.value === 'person') {
      try {
        const person = await api('/api/person?' + scopeQuery() + '&term=' + encodeURIComponent(term.value));
        window.location.hash = '#/person/' + encodeURIComponent(person.person_id);
      } catch (error) {
        results.replaceChildren(errorBox(error.message));
      }
      return;
    }
    try {
      const found = await api('/api/search', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ integration: state.integration, field: field.value, term: term.value, cursor: more ? cursor : null }),
      });
      if (!rows) {
        if (found.results.length === 0) {
          results.replaceChildren(el('p', { class: 'muted', text: 'No lead found.' }));
          return;
        }
        rows = el('tbody', {});
        results.replaceChildren(el('div', { class: 'scroll' }, el('table', {},
          el('thead', {}, el('tr', {}, EVENT_HEADERS.map((h) => el('th', { scope: 'col', text: h })))), rows)));
      }
      for (const lead of found.results) rows.append(eventRow(lead, false));
      cursor = found.cursor;
      const previous = results.querySelector('button.more');
      if (previous) previous.remove();
      if (cursor) results.append(el('button', { type: 'button', class: 'more', text: 'More', onclick: () => run(true) }));
    } catch (error) {
      results.replaceChildren(errorBox(error.message));
    }
  };
  const form = el('form', { class: 'search', onsubmit: (event) => { event.preventDefault(); run(false); } },
    el('label', { for: 'search-field' }, 'Search by', field),
    el('label', { for: 'search-term' }, 'Term', term),
    el('button', { type: 'submit', class: 'primary', text: 'Search' }));
  root.append(el('h1', { text: 'Search' }), form, results);
  term.focus();
}

function fieldList(pairs) {
  return el('dl', { class: 'fields' }, pairs.flatMap(([name, value]) => [
    el('dt', { text: name }),
    el('dd', {}, value instanceof Node ? value : (value === null || value === undefined || value === '' ? el('span', { class: 'muted', text: '—' }) : String(value))),
  ]));
}

function mapTable(map) {
  const entries = Object.entries(map || {});
  if (entries.length === 0) return el('p', { class: 'muted', text: 'none' });
  return table(['Key', 'Value'], entries.map(([k, v]) => el('tr', {}, el('td', {}, el('code', { text: k })), el('td', { text: v }))));
}

function pretty(json) {
  if (!json) return el('p', { class: 'muted', text: 'none' });
  try {
    return el('pre', { text: JSON.stringify(JSON.parse(json), null, 2) });
  } catch (_) {
    return el('pre', { text: json });
  }
}

// Lead: every stored field, what Roistat was answered, the deal, what came after.
async function showLead(root, integration, leadId) {
  root.append(el('h1', {}, 'Lead ', el('code', { text: leadId })));
  let lead;
  try {
    lead = await api('/api/lead?integration=' + encodeURIComponent(integration) + '&lead_id=' + encodeURIComponent(leadId));
  } catch (error) {
    root.append(errorBox(error.message));
    return;
  }
  if (lead.unreadable) { root.append(errorBox('This lead is stored in a form the service cannot read.')); return; }
  const deal = lead.deal;
  const order = lead.order;
  root.append(
    fieldList([
      ['Integration', lead.integration], ['Lead id', withCopy(lead.lead_id)], ['Sequence', lead.sequence],
      ['Received', when(lead.receive_time)], ['Created (Roistat)', when(lead.create_time)],
      ['Source', lead.source], ['Visit', withCopy(lead.visit)], ['Title', lead.title], ['Text', lead.text],
      ['Name', lead.name], ['Phone', lead.phone], ['Phone (E.164)', lead.phone_e164], ['E-mail', lead.email],
      ['Person', lead.person_id ? el('span', {}, personLink(lead.person_id), lead.returning ? ' (returning)' : ' (first lead)') : null],
      ['Page', lead.page],
      ['Manager id', lead.manager_id],
      ['Read', lead.decoding_lossy ? el('span', {}, lossyBadge(lead), ' the request as it came is below') : 'whole'],
    ]),
    el('h2', { text: 'What Roistat was answered' }),
    fieldList([
      ['Order id', deal.answered_order_id ? withCopy(deal.answered_order_id) : el('span', { class: 'muted', text: 'not answered yet (waiting for the CRM’s deal id)' })],
      ['Fixed', when(order ? order.fixed_time : null)],
    ]),
    el('h2', { text: 'The deal, as the CRM reported it' }),
    fieldList([
      ['Deal id', withCopy(deal.deal_id)], ['Name', deal.name],
      ['Status', deal.status ? (deal.status_name ? deal.status_name + ' (' + deal.status + ')' : deal.status) : null],
      ['Price', deal.price], ['Cost', deal.cost], ['Manager id', deal.manager_id], ['Client id', deal.client_id],
      ['Created (CRM)', when(deal.create_time)], ['Updated', when(deal.update_time)],
    ]),
    el('h3', { text: 'Deal fields' }), mapTable(deal.fields),
    el('h2', { text: 'In Roistat’s export now' }),
    order ? el('pre', { text: JSON.stringify(order.export, null, 2) }) : el('p', { class: 'muted', text: 'Not in the export: its order id is not fixed yet.' }),
    el('h2', { text: 'Calls, latest state' }),
    (lead.calls || []).length === 0 ? el('p', { class: 'muted', text: 'none' })
      : table(['Call id', 'Status', 'Caller', 'Duration (s)', 'Recording', 'As of'], lead.calls.map((call) => el('tr', { 'data-call': call.call_id },
        el('td', {}, el('code', { text: call.call_id })), el('td', { text: call.title || '' }),
        el('td', { text: call.phone || '' }), el('td', { text: call.duration === null || call.duration === undefined ? '' : call.duration }),
        el('td', { text: call.file_url || '' }), el('td', {}, when(call.time))))),
    el('h2', { text: 'Messages, tasks and calls about it (history, newest first)' }),
    lead.events.length === 0 ? el('p', { class: 'muted', text: 'none' })
      : table(['Time', 'Kind', 'Title', 'Text'], lead.events.map((event) => el('tr', { 'data-sequence': event.sequence },
        el('td', {}, when(event.time)), el('td', {}, el('span', { class: 'kind', text: event.kind }), lossyBadge(event)),
        el('td', { text: event.title || '' }), el('td', { text: event.text || '' })))),
    el('h2', { text: 'Form fields (data)' }), mapTable(lead.fields),
    el('h2', { text: 'data, as received' }), pretty(lead.data_json),
    el('h2', { text: 'Other parameters (extra)' }), mapTable(lead.extra),
    decodingSection(lead));
}

function personLink(personId) {
  return el('a', { href: '#/person/' + encodeURIComponent(personId), text: 'person ' + personId });
}

// Person: every lead of one person over time, across channels, and what links them.
async function showPerson(root, personId) {
  root.append(el('h1', {}, 'Person ', el('code', { text: personId })));
  let person;
  try {
    person = await api('/api/person?person_id=' + encodeURIComponent(personId));
  } catch (error) {
    root.append(errorBox(error.message));
    return;
  }
  if (String(person.person_id) !== String(personId)) {
    root.append(el('p', { class: 'muted' }, 'Person ' + personId + ' was merged into ', personLink(person.person_id), '.'));
  }
  root.append(
    fieldList([
      ['Integration', person.integration], ['Person id', withCopy(String(person.person_id))],
      ['First seen', when(person.first_seen)], ['Last seen', when(person.last_seen)], ['Leads', person.lead_count],
      ['Phones', person.phones.join(', ')], ['E-mails', person.emails.join(', ')],
      ['Merged into it', (person.aliases || []).join(', ')],
    ]),
    el('h2', { text: 'Leads over time' }),
    table(['Time', 'Source', 'Title', 'Lead', 'Phone (E.164)', 'E-mail'], person.leads.map((lead) => el('tr', { 'data-sequence': lead.sequence },
      el('td', {}, when(lead.time)), el('td', { text: lead.source }), el('td', { text: lead.title }),
      el('td', {}, leadLink(person.integration, lead.lead_id)),
      el('td', { text: lead.phone_e164 }), el('td', { text: lead.email })))));
}

// Consumers: where each named consumer stands.
async function showConsumers(root) {
  const content = el('div', {});
  root.append(el('h1', { text: 'Consumers' }), content);
  const refresh = async () => {
    try {
      const found = await api('/api/consumers');
      const rows = found.consumers.map((c) => el('tr', { 'data-consumer': c.name },
        el('td', {}, el('code', { text: c.name })), el('td', { text: c.acked_sequence }),
        el('td', { class: 'pending', text: c.pending }), el('td', {}, when(c.ack_time)),
        el('td', { text: c.connected > 0 ? 'yes (' + c.connected + ')' : 'no' })));
      content.replaceChildren(
        el('p', {}, 'Live subscribers on this replica: ', el('strong', { text: found.subscribers })),
        rows.length ? table(['Consumer', 'Acked sequence', 'Pending', 'Last ack', 'Connected here'], rows)
          : el('p', { class: 'muted', text: 'No named consumers yet.' }));
    } catch (error) {
      content.replaceChildren(errorBox(error.message));
    }
  };
  await refresh();
  state.timer = setInterval(refresh, 2000);
}

// Requests: refused and rejected webhook requests, newest first.
async function showRequests(root) {
  const body = el('tbody', {});
  const more = el('div', {});
  root.append(el('h1', { text: 'Refused requests' }),
    el('div', { class: 'scroll' }, el('table', {},
      el('thead', {}, el('tr', {}, ['Time', 'Integration', 'From', 'Action', 'Status', 'Reason', 'Query'].map((h) => el('th', { scope: 'col', text: h })))),
      body)), more);
  const load = async (cursor) => {
    try {
      const page = await api('/api/requests?' + scopeQuery() + '&cursor=' + encodeURIComponent(cursor || ''));
      for (const r of page.requests) {
        body.append(el('tr', {},
          el('td', {}, when(r.time)), el('td', { text: r.integration || '—' }), el('td', { text: r.source }),
          el('td', { text: r.action || '—' }), el('td', { text: r.status }), el('td', { class: 'reason', text: r.reason }),
          el('td', {}, el('code', { text: r.query.length > 300 ? r.query.slice(0, 300) + '…' : r.query }))));
      }
      if (page.requests.length === 0 && !cursor) more.replaceChildren(el('p', { class: 'muted', text: 'No refused requests.' }));
      else more.replaceChildren(page.cursor ? el('button', { type: 'button', text: 'More', onclick: () => load(page.cursor) }) : '');
    } catch (error) {
      more.replaceChildren(errorBox(error.message));
    }
  };
  await load('');
}

function bytes(count) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return value.toFixed(unit ? 1 : 0) + ' ' + units[unit];
}

function card(label, value) {
  return el('div', { class: 'card' }, el('div', { class: 'muted', text: label }), el('div', { class: 'value', text: value }));
}

// Leads per minute by source over the last 24 hours.
function chart(since, minutes) {
  const start = Math.floor(new Date(since).getTime() / 60000);
  const span = 24 * 60;
  const sources = [...new Set(minutes.map((m) => m.source || 'other'))].sort();
  const peak = Math.max(1, ...minutes.map((m) => m.count));
  const width = 1440;
  const height = 200;
  const box = svg('svg', { viewBox: '0 0 ' + width + ' ' + (height + 10), role: 'img', 'aria-label': 'Leads per minute by source, last 24 hours' });
  box.append(svg('line', { x1: 0, y1: height, x2: width, y2: height, class: 'axis' }));
  sources.forEach((source, index) => {
    const counts = new Map(minutes.filter((m) => (m.source || 'other') === source).map((m) => [m.minute - start, m.count]));
    const points = [];
    for (let x = 0; x <= span; x += 1) points.push(x + ',' + (height - (height * (counts.get(x) || 0)) / peak).toFixed(1));
    box.append(svg('polyline', { points: points.join(' '), class: 's' + (index % 6) }));
  });
  return el('div', { class: 'chart' }, box,
    el('div', { class: 'legend' }, sources.map((source, index) => el('span', {}, el('span', { class: 'swatch s' + (index % 6) }), source)),
      el('span', { class: 'muted', text: 'peak ' + peak + ' a minute' })));
}

async function showOverview(root) {
  root.append(el('h1', { text: 'Overview' }));
  try {
    const o = await api('/api/overview?' + scopeQuery());
    const total = o.minutes.reduce((sum, m) => sum + m.count, 0);
    const ms = (seconds) => (seconds === null || seconds === undefined ? '—' : '≤ ' + (seconds * 1000).toFixed(1) + ' ms');
    const missing = o.scheme_missing || [];
    root.append(
      missing.length === 0 ? null : el('p', { class: 'error scheme-missing', role: 'alert' },
        'No status to export orders with in ', el('strong', { text: missing.join(', ') }),
        ': Roistat gets an empty status it cannot map to a status group. Set default_status ',
        '(--default-status) or have the CRM publish a scheme (UpdateScheme).'),
      el('div', { class: 'cards' },
        card('Leads, last 24 h', total), card('Latest sequence', o.latest_sequence),
        card('Store size', bytes(o.store_bytes)), card('Live subscribers', o.subscribers),
        card('Lead webhook p50', ms(o.ingest_p50_seconds)), card('Lead webhook p99', ms(o.ingest_p99_seconds))),
      el('h2', { text: 'Leads per minute by source, last 24 hours' }), chart(o.since, o.minutes),
      el('h2', { text: 'Webhook answers since start, by outcome' }),
      table(['Outcome', 'Answers'], Object.entries(o.outcomes).filter(([, n]) => n > 0).map(([outcome, n]) =>
        el('tr', {}, el('td', { text: outcome }), el('td', { text: n })))));
  } catch (error) {
    root.append(errorBox(error.message));
  }
}

function route() {
  stopUpdates();
  const root = viewRoot();
  root.replaceChildren();
  const parts = window.location.hash.replace(/^#\/?/, '').split('/');
  const view = parts[0] || 'live';
  for (const link of document.querySelectorAll('nav a')) {
    if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  switch (view) {
    case 'search': showSearch(root); break;
    case 'lead': showLead(root, decodeURIComponent(parts[1] || ''), decodeURIComponent(parts.slice(2).join('/'))); break;
    case 'person': showPerson(root, decodeURIComponent(parts[1] || '')); break;
    case 'consumers': showConsumers(root); break;
    case 'requests': showRequests(root); break;
    case 'overview': showOverview(root); break;
    default: showLive(root);
  }
}

async function start() {
  try {
    state.meta = await api('/api/meta');
  } catch (error) {
    viewRoot().replaceChildren(errorBox(error.message));
    return;
  }
  const select = document.getElementById('integration');
  for (const name of state.meta.integrations) select.append(el('option', { value: name, text: name }));
  const saved = window.localStorage.getItem('integration') || '';
  if (state.meta.integrations.includes(saved)) select.value = saved;
  state.integration = select.value;
  select.addEventListener('change', () => {
    state.integration = select.value;
    window.localStorage.setItem('integration', select.value);
    route();
  });
  if (state.meta.login) document.getElementById('logout').hidden = false;
  window.addEventListener('hashchange', route);
  route();
}

document.addEventListener('DOMContentLoaded', start);
