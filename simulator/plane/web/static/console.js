// The console's main page: orders, refunds, notification attempts, requests, faults, the
// clock, bills and the configuration, from GET /sim/console/state, refetched when the
// simulator pushes a change (or polled when the push fails); a filter kept in the URL (?q=).
// Plain script, no build step; needs common.js and rows.js.
(function (C) {
  'use strict';

  var $ = C.$, el = C.el, td = C.td, code = C.code, R = C.rows;
  var STATE_URL = '/sim/console/state';
  var last = null;          // the last snapshot
  var fetchedAt = 0;        // performance.now() when it arrived
  var updates = null;

  // The simulator's clock is real time plus its offset: "now" is the snapshot's now plus the
  // time since it arrived.
  function simNow() {
    if (!last) return Date.now() / 1000;
    return last.clock.now + (performance.now() - fetchedAt) / 1000;
  }

  function tick() {
    var now = simNow();
    C.updateRelative(now);
    if (last) $('#clock-now').textContent = C.dateTime(now);
  }

  // --- keyed rows: a row is rebuilt only when its data changed; an open menu stays open -----
  function rebuild(tr, item, build) {
    var fresh = build(item);
    if (tr) {
      var before = tr.querySelectorAll('details'), after = fresh.querySelectorAll('details');
      if (before.length === after.length) {
        before.forEach(function (d, i) { if (d.open) after[i].open = true; });
      }
    }
    return fresh;
  }

  function syncRows(tbody, items, keyOf, build, emptyText, colspan) {
    var existing = new Map();
    Array.prototype.forEach.call(tbody.children, function (tr) {
      if (tr.dataset.key != null) existing.set(tr.dataset.key, tr);
      else tr.remove();
    });
    var prev = null;
    items.forEach(function (item) {
      var key = keyOf(item);
      var hash = JSON.stringify(item);
      var tr = existing.get(key);
      if (!tr || tr._hash !== hash) {
        var fresh = rebuild(tr, item, build);
        fresh.dataset.key = key;
        fresh._hash = hash;
        if (tr) tr.replaceWith(fresh);
        tr = fresh;
      }
      existing.delete(key);
      var want = prev ? prev.nextSibling : tbody.firstChild;
      if (tr !== want) tbody.insertBefore(tr, want);
      prev = tr;
    });
    existing.forEach(function (tr) { tr.remove(); });
    if (!items.length) {
      tbody.appendChild(el('tr', { className: 'empty' },
        el('td', { colspan: colspan, text: emptyText })));
    }
  }

  // --- the filter: ?q=, case-insensitive substring of each row's data-search ----------------
  var FILTERED = ['#orders-body', '#refunds-body', '#notifications-body', '#requests-body'];

  function query() { return $('#filter').value.trim().toLowerCase(); }

  function applyFilter() {
    var q = query();
    FILTERED.forEach(function (selector) {
      var tbody = $(selector);
      var rows = tbody.querySelectorAll('tr[data-search]');
      var shown = 0;
      rows.forEach(function (tr) {
        tr.hidden = q !== '' && tr.getAttribute('data-search').indexOf(q) < 0;
        if (!tr.hidden) shown += 1;
      });
      var count = tbody.closest('table').previousElementSibling;
      if (count && count.classList.contains('count')) {
        count.textContent = q ? shown + ' of ' + rows.length + ' match "' + q + '"' : '';
      }
    });
  }

  function onFilter() {
    var url = new URL(window.location.href);
    var q = $('#filter').value.trim();
    if (q) url.searchParams.set('q', q);
    else url.searchParams.delete('q');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
    applyFilter();
  }

  // --- faults and config -----------------------------------------------------------------
  function buildFault(f) {
    return el('tr', { 'data-fault': f.id, 'data-path': f.path, 'data-kind': f.kind },
      td(code(f.id)), td(code(f.path)), td(f.kind),
      td(f.value == null ? '' : String(f.value)), td(String(f.probability)),
      td(f.count == null ? 'until deleted' : String(f.count)), td(String(f.fired)),
      td(el('button', { type: 'button', className: 'delete', text: 'Delete' })));
  }

  function buildApp(a) {
    return el('tr', { 'data-app': a.appid }, td(code(a.appid)),
      td(code(a.secret_masked), 'masked'));
  }

  function buildMerchant(m) {
    return el('tr', { 'data-merchant': m.mch_id }, td(code(m.mch_id)),
      td(code(m.api_key_masked), 'masked'), td(code(m.sandbox_key_masked), 'masked'),
      td(m.appids.join(', ')));
  }

  // --- render ------------------------------------------------------------------------------
  function bySeq(x) { return String(x.seq); }

  function renderTables(s) {
    syncRows($('#orders-body'), s.orders, function (o) { return o.mch_id + '/' + o.out_trade_no; },
      R.buildOrder, 'No order yet: a unifiedorder call creates one.', 10);
    syncRows($('#refunds-body'), s.refunds, function (r) { return r.mch_id + '/' + r.out_refund_no; },
      R.buildRefund, 'No refund yet.', 8);
    syncRows($('#notifications-body'), s.notifications, bySeq, R.buildNotification,
      'No notification sent yet: a paid order is notified.', 10);
    syncRows($('#requests-body'), s.requests, bySeq, function (r) { return R.buildRequest(r); },
      'No WeChat call yet.', 5);
    syncRows($('#faults-body'), s.faults, function (f) { return f.id; }, buildFault,
      'No fault configured: every call is answered normally.', 8);
    syncRows($('#apps-body'), s.config.apps, function (a) { return a.appid; }, buildApp, '', 2);
    syncRows($('#merchants-body'), s.config.merchants, function (m) { return m.mch_id; },
      buildMerchant, '', 4);
    syncBillMerchants(s.config.merchants);
  }

  function quickButton(selector, seconds) {
    $(selector).setAttribute('data-seconds', String(seconds));
    $(selector).title = 'advance ' + seconds + ' s';
  }

  function render(s) {
    renderTables(s);
    applyFilter();
    var off = s.clock.offset;
    $('#clock-offset').textContent = off ?
      (off > 0 ? '+' : '-') + C.duration(off) + ' (' + off + ' s)' : '0 (real time)';
    $('#clock-scale').textContent = String(s.clock.time_scale);
    $('#ttl-code').textContent = C.duration(s.ttl.code);
    $('#ttl-prepay').textContent = C.duration(s.ttl.prepay);
    quickButton('#advance-code', s.ttl.code + 1);
    quickButton('#advance-prepay', s.ttl.prepay + 1);
    $('#refund-delay').textContent = C.duration(s.refund_delay_scaled);
    $('#seed').textContent = s.seed == null ? '' : 'Fault draws seeded with ' + s.seed + '.';
    $('#stats').textContent = s.stats.wechat_requests + ' WeChat calls on ' +
      s.stats.connections_accepted + ' connections';
  }

  function load() {
    return fetch(STATE_URL, { cache: 'no-store', headers: { Accept: 'application/json' } })
      .then(function (resp) {
        if (!resp.ok) throw new Error('HTTP ' + resp.status);
        return resp.json();
      })
      .then(function (s) {
        last = s;
        fetchedAt = performance.now();
        render(s);
        tick();
        return s.revision;
      });
  }

  function refresh() { updates.refresh(); }

  // --- the page's own controls ------------------------------------------------------------
  function pageAction(b) {
    var tr = b.closest('tr');
    if (b.classList.contains('delete') && tr && tr.hasAttribute('data-fault')) {
      var id = tr.getAttribute('data-fault');
      C.act(b, 'DELETE', '/sim/faults/' + encodeURIComponent(id), undefined, function () {
        return 'Fault ' + id + ' deleted.';
      }, refresh);
    } else if (b.id === 'clear-faults') {
      C.act(b, 'DELETE', '/sim/faults', undefined, function (d) {
        return d.deleted + ' fault' + (d.deleted === 1 ? '' : 's') + ' cleared.';
      }, refresh);
    } else if (b.id === 'advance' || b.id === 'advance-code' || b.id === 'advance-prepay') {
      var seconds = b.id === 'advance' ? parseFloat($('#advance-seconds').value) :
        parseFloat(b.getAttribute('data-seconds'));
      if (!(seconds >= 0)) { C.say('Advance by a number of seconds (0 or more).', false); return; }
      C.act(b, 'POST', '/sim/clock', { advance: seconds }, function (d) {
        return 'Clock advanced ' + C.duration(seconds) + '; offset now ' + d.offset + ' s.';
      }, refresh);
    } else if (b.id === 'show-bill') {
      showBill();
    } else if (b.id === 'reset') {
      C.act(b, 'POST', '/sim/reset', undefined, function () {
        return 'Simulator reset: orders, refunds, codes, logs, faults and clock offset forgotten.';
      }, refresh);
    }
  }

  function onClick(event) {
    if (R.onAction(event, refresh)) return;
    var b = event.target.closest('button');
    if (b && !b.disabled) pageAction(b);
  }

  // a bill is one merchant's: with several configured, the simulator needs ?mch_id=
  function billUrl() {
    return '/sim/bills/' + encodeURIComponent($('#bill-date').value) +
      '?bill_type=' + encodeURIComponent($('#bill-type').value) +
      '&mch_id=' + encodeURIComponent($('#bill-mch').value);
  }

  // the merchant choice follows the configured merchants (the first chosen at first)
  function syncBillMerchants(merchants) {
    var select = $('#bill-mch');
    var ids = merchants.map(function (m) { return m.mch_id; });
    if (Array.prototype.map.call(select.options, function (o) { return o.value; }).join() ===
        ids.join()) return;
    var chosen = select.value;
    select.textContent = '';
    ids.forEach(function (id) { select.appendChild(el('option', { value: id, text: id })); });
    if (ids.indexOf(chosen) >= 0) select.value = chosen;
  }

  // GET /sim/bills/<day>: the bill's text, or the reason there is none (yet)
  function showBill() {
    var url = billUrl();
    $('#bill-link').href = url;
    fetch(url).then(function (r) {
      return r.text().then(function (text) {
        if (r.ok) { $('#bill-text').textContent = text; return; }
        var reason = text;
        try { reason = JSON.parse(text).error.message; } catch (e) { /* not JSON */ }
        $('#bill-text').textContent = 'No bill: ' + reason;
      });
    });
  }

  function numberField(form, name) {
    var text = form.elements[name].value.trim();
    if (text === '') return undefined;
    var value = Number(text);
    return isFinite(value) ? value : text;      // the simulator explains a bad value
  }

  function onFaultSubmit(event) {
    event.preventDefault();
    var form = event.target;
    var body = { path: form.elements.path.value, kind: form.elements.kind.value };
    ['value', 'probability', 'count'].forEach(function (name) {
      var value = numberField(form, name);
      if (value !== undefined) body[name] = value;
    });
    C.act(form.querySelector('button[type=submit]'), 'POST', '/sim/faults', body, function (d) {
      return 'Fault ' + d.id + ' added: ' + body.kind + ' on ' + body.path + '.';
    }, refresh);
  }

  function init() {
    $('#filter').value = new URLSearchParams(window.location.search).get('q') || '';
    $('#filter').addEventListener('input', onFilter);
    document.addEventListener('click', onClick);
    $('#fault-form').addEventListener('submit', onFaultSubmit);
    setInterval(tick, 250);
    updates = C.live(load);
  }

  C.start(init);
}(window.Console));
