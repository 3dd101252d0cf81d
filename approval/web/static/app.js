// clawd approvals page. Every string from the server is put on the page with
// textContent, never parsed as HTML: agents write URLs, bodies and summaries.
// The API token lives in sessionStorage and travels only in the
// Authorization header, never in a URL.
'use strict';
(function () {
  const KEY = 'clawd-token';
  const POLL_MS = 3000;
  const $ = (id) => document.getElementById(id);

  let skew = 0;          // server clock minus browser clock, ms
  let pollTimer = null;
  let lastRecent = '';
  const cards = new Map(); // approval id -> {digest, el}

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function show(node, on) { node.hidden = !on; }

  function say(text, isError) {
    const m = $('message');
    m.textContent = text || '';
    m.className = isError ? 'error' : 'ok';
    show(m, !!text);
  }

  async function api(method, path, body, withToken) {
    const headers = {};
    if (withToken) headers['Authorization'] = 'Bearer ' + (sessionStorage.getItem(KEY) || '');
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      r = await fetch('/ui/api/' + path, {
        method: method, headers: headers, cache: 'no-store', credentials: 'omit',
        redirect: 'error', referrerPolicy: 'no-referrer',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      return { status: 0, ok: false, data: { error: 'clawd is not reachable' } };
    }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    return { status: r.status, ok: r.ok, data: data || {} };
  }

  function setClock(serverNow) {
    const t = Date.parse(serverNow);
    if (!isNaN(t)) skew = t - Date.now();
  }

  function timeLeft(expires) {
    const ms = Date.parse(expires) - (Date.now() + skew);
    if (isNaN(ms)) return '';
    if (ms <= 0) return 'expired';
    const s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h > 0) return h + 'h ' + m + 'm left';
    if (m > 0) return m + 'm ' + sec + 's left';
    return sec + 's left';
  }

  function tick() {
    document.querySelectorAll('[data-expires]').forEach((n) => {
      n.textContent = timeLeft(n.dataset.expires);
    });
  }

  function when(ts) {
    const t = Date.parse(ts);
    return isNaN(t) ? '' : new Date(t).toLocaleString();
  }

  function details(label, text, open) {
    const d = el('details');
    d.open = !!open;
    d.append(el('summary', null, label), el('pre', null, text));
    return d;
  }

  // card renders one approval; actions is a list of {act, label, cls} or
  // null for a decided one; onAct(act, reason, card) decides.
  function card(v, actions, onAct) {
    const c = el('article', 'card');
    c.dataset.id = v.id;
    c.append(el('h3', 'summary', v.summary || (v.method + ' ' + v.url)));

    const meta = el('p', 'meta');
    meta.append(el('span', 'label', 'container '), el('span', 'container', v.container),
      el('span', 'label', ' · rule '), el('span', 'rule', v.rule));
    if (v.held_on) {
      meta.append(el('span', 'label', ' · held on '), el('span', 'held-on', v.held_on +
        (v.host_state && v.host_state !== 'up' ? ' (' + v.host_state + ')' : '')));
    }
    if (v.status === 'pending') {
      const left = el('span', 'left');
      left.dataset.expires = v.expires;
      left.textContent = timeLeft(v.expires);
      meta.append(el('span', 'label', ' · '), left);
    }
    c.append(meta);

    const req = el('p', 'request');
    req.append(el('code', 'method', v.method), document.createTextNode(' '), el('code', 'url', v.url));
    c.append(req);

    const hs = v.headers || {};
    const names = Object.keys(hs).sort();
    if (names.length) {
      const lines = [];
      names.forEach((n) => (hs[n] || []).forEach((val) => lines.push(n + ': ' + val)));
      c.append(details('Headers (' + names.length + ')', lines.join('\n'), false));
    }
    if (v.body) {
      let label = 'Body (' + v.body_size + ' bytes';
      if (v.body_truncated) label += ', preview truncated';
      c.append(details(label + ')', v.body, v.status === 'pending'));
    } else if (v.body_size > 0) {
      c.append(el('p', 'meta', 'Body: ' + v.body_size + ' bytes (no preview)'));
    }

    if (v.required > 1) {
      const votes = v.votes || [];
      c.append(el('p', 'votes', votes.length + ' of ' + v.required + ' approvals' +
        (votes.length ? ': ' + votes.join(', ') : '')));
    }

    if (actions && v.status === 'pending') {
      const bar = el('div', 'actions');
      const reason = el('input', 'reason');
      reason.type = 'text';
      reason.placeholder = 'Reason (optional, shown to the agent on deny)';
      reason.maxLength = 500;
      reason.setAttribute('aria-label', 'Deny reason');
      const out = el('p', 'card-message');
      out.setAttribute('role', 'status');
      out.hidden = true;
      actions.forEach((a) => {
        const b = el('button', 'act ' + a.cls, a.label);
        b.type = 'button';
        b.dataset.act = a.act;
        b.addEventListener('click', async () => {
          bar.querySelectorAll('button, input').forEach((x) => { x.disabled = true; });
          const res = await onAct(a.act, a.act === 'd' ? reason.value : '', c);
          out.textContent = res.text;
          out.className = 'card-message ' + (res.ok ? 'ok' : 'error');
          out.hidden = false;
          if (!res.ok) bar.querySelectorAll('button, input').forEach((x) => { x.disabled = false; });
        });
        bar.append(b);
      });
      if (actions.some((a) => a.act === 'd')) bar.append(reason);
      c.append(bar, out);
    } else if (v.status !== 'pending') {
      c.append(outcome(v));
    }
    return c;
  }

  function outcome(v) {
    const p = el('p', 'outcome');
    p.append(el('span', 'status status-' + v.status, v.status));
    if (v.by) p.append(el('span', 'label', ' by '), el('span', 'by', v.by));
    if (v.decided) p.append(el('span', 'label', ' · '), el('time', 'decided', when(v.decided)));
    if (v.reason) p.append(el('span', 'label', ' · '), el('span', 'why', v.reason));
    return p;
  }

  function tokenActions(v) {
    const a = [{ act: 'a', label: 'Approve once', cls: 'primary' }];
    if (v.grants_allowed) a.push({ act: 'g', label: 'Approve for 15 min', cls: '' });
    a.push({ act: 'd', label: 'Deny', cls: 'danger' });
    return a;
  }

  // ---- token mode: the whole board ----

  function logout(msg) {
    sessionStorage.removeItem(KEY);
    clearTimeout(pollTimer);
    cards.clear();
    lastRecent = '';
    $('pending').replaceChildren();
    $('recent').replaceChildren();
    show($('board'), false);
    show($('logout'), false);
    show($('login'), true);
    const e = $('login-error');
    e.textContent = msg || '';
    show(e, !!msg);
    $('token').focus();
  }

  async function refresh() {
    clearTimeout(pollTimer);
    const r = await api('GET', 'approvals', undefined, true);
    if (r.status === 401) { logout('Wrong token.'); return false; }
    if (!r.ok) {
      say(r.data.error || ('Error ' + r.status), true);
    } else {
      setClock(r.data.now);
      render(r.data.pending || [], r.data.recent || []);
      if (r.data.fleet_error) say(r.data.fleet_error, true);
    }
    pollTimer = setTimeout(refresh, POLL_MS);
    return r.ok;
  }

  function render(pending, recent) {
    const box = $('pending');
    const seen = new Set();
    pending.forEach((v) => {
      seen.add(v.id);
      const have = cards.get(v.id);
      const key = v.digest + '|' + (v.votes || []).length + '|' + (v.held_on || '') + '|' + (v.host_state || '');
      if (have && have.key === key) return;
      const c = card(v, tokenActions(v), decideToken);
      if (have) box.replaceChild(c, have.el); else box.append(c);
      cards.set(v.id, { key: key, el: c });
    });
    cards.forEach((have, id) => {
      if (!seen.has(id)) { have.el.remove(); cards.delete(id); }
    });
    $('pending-count').textContent = pending.length ? '(' + pending.length + ')' : '';
    show($('pending-empty'), pending.length === 0);

    const rk = JSON.stringify(recent.map((v) => [v.id, v.status, v.by, v.votes]));
    if (rk !== lastRecent) {
      lastRecent = rk;
      $('recent').replaceChildren(...recent.map((v) => {
        const li = el('li');
        li.append(card(v, null, null));
        return li;
      }));
    }
    show($('recent-empty'), recent.length === 0);
    tick();
  }

  async function decideToken(act, reason, c) {
    const id = c.dataset.id;
    const have = cards.get(id);
    const digest = have ? have.key.split('|')[0] : '';
    const body = { act: act, digest: digest };
    if (reason) body.reason = reason;
    const r = await api('POST', 'approvals/' + encodeURIComponent(id) + '/decide', body, true);
    if (r.status === 401) { logout('Wrong token.'); return { ok: false, text: 'Wrong token.' }; }
    const text = r.data.message || r.data.error || ('Error ' + r.status);
    say(text, !r.ok);
    await refresh();
    return { ok: r.ok, text: text };
  }

  async function login(ev) {
    ev.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    if (!t) return;
    sessionStorage.setItem(KEY, t);
    show($('login-error'), false);
    if (await startBoard()) show($('login'), false);
  }

  async function startBoard() {
    show($('board'), true);
    show($('logout'), true);
    const ok = await refresh();
    if (ok) show($('login'), false);
    return ok;
  }

  // ---- link mode: one approval, one action ----

  function parseLink() {
    const m = location.pathname.match(/^\/ui\/link\/([^/]+)\/(approve|deny)$/);
    if (!m) return null;
    const q = new URLSearchParams(location.search);
    let id;
    try { id = decodeURIComponent(m[1]); } catch (e) { return null; }
    return { id: id, action: m[2], exp: q.get('exp') || '', sig: q.get('sig') || '' };
  }

  async function startLink(link) {
    show($('link'), true);
    $('link-title').textContent = link.action === 'approve' ? 'Approve this request?' : 'Deny this request?';
    const r = await api('POST', 'link', { id: link.id, action: link.action, exp: link.exp, sig: link.sig }, false);
    if (!r.ok) {
      const e = $('link-error');
      e.textContent = r.data.error || ('Error ' + r.status);
      show(e, true);
      return;
    }
    setClock(r.data.now);
    showLinkCard(link, r.data.approval);
  }

  function showLinkCard(link, v) {
    const actions = link.action === 'approve'
      ? [{ act: 'a', label: 'Approve once', cls: 'primary' }]
      : [{ act: 'd', label: 'Deny', cls: 'danger' }];
    const c = card(v, actions, async (act, reason) => {
      const body = { id: link.id, action: link.action, exp: link.exp, sig: link.sig, act: act, digest: v.digest };
      if (reason) body.reason = reason;
      const r = await api('POST', 'link/decide', body, false);
      const text = r.data.message || r.data.error || ('Error ' + r.status);
      say(text, !r.ok);
      if (r.data.approval && r.data.approval.status !== 'pending') showLinkCard(link, r.data.approval);
      return { ok: r.ok, text: text };
    });
    $('link-card').replaceChildren(c);
    tick();
  }

  function start() {
    setInterval(tick, 1000);
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => logout(''));
    const link = parseLink();
    if (link) { startLink(link); return; }
    if (sessionStorage.getItem(KEY)) startBoard(); else logout('');
  }

  start();
})();
