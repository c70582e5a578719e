// A results page's actions: Rebuild failed, Rebuild all and Cancel on a commit page
// (the console's job actions, for builders), and a running variant's log followed.
document.addEventListener('DOMContentLoaded', () => {
  const out = document.getElementById('action-result');
  for (const b of document.querySelectorAll('button[data-action]')) {
    b.addEventListener('click', async () => {
      const ids = (b.dataset.jobs || '').split(' ').filter((x) => x);
      out.textContent = 'working…';
      try {
        const tok = (await (await fetch('/api/csrf', {credentials: 'same-origin'})).json()).csrf;
        const post = (url, body) => fetch(url, {method: 'POST', credentials: 'same-origin',
          headers: {'X-CSRF-Token': tok, 'Content-Type': 'application/json'}, body: JSON.stringify(body || {})});
        let r;
        if (b.dataset.action === 'cancel') {
          for (const id of ids) {
            r = await post('/api/job/' + encodeURIComponent(id) + '/cancel');
            if (!r.ok) break;
          }
        } else {
          r = await post('/api/query/rebuild', {ids});
        }
        const body = await r.json().catch(() => ({}));
        if (!r.ok) {
          out.textContent = (body.error || r.statusText) + ' (' + r.status + ')';
          return;
        }
        out.textContent = b.dataset.action === 'cancel' ? 'cancelled ' + ids.length + ' job(s)' :
          'rebuilding ' + (body.jobs || []).length + ' job(s)' + ((body.deferred || []).length ? ', ' + body.deferred.length + ' when next wanted' : '');
        setTimeout(() => location.reload(), 1500);
      } catch (e) {
        out.textContent = String(e);
      }
    });
  }
  const live = document.querySelector('pre.log[data-live]');
  if (live) {
    window.scrollTo(0, document.body.scrollHeight);
    setTimeout(() => location.reload(), 1000 * Number(live.dataset.live));
  }
});
