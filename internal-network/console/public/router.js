// Hash routes: #/fleet, #/device/ID, #/security, #/pipeline, #/anomalies. Hash routes need no
// server support and never send anything to the server in a URL.

export const PAGES = ['fleet', 'device', 'security', 'pipeline', 'anomalies'];

/** The route of a hash: { page, id? }; anything unknown is the fleet. */
export function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/');
  const page = parts[0] ?? '';
  if (page === 'device' && parts.length >= 2 && parts[1] !== '') {
    let id;
    try {
      id = decodeURIComponent(parts.slice(1).join('/'));
    } catch {
      return { page: 'fleet' };
    }
    return { page: 'device', id };
  }
  return PAGES.includes(page) && page !== 'device' ? { page } : { page: 'fleet' };
}

export function routeHash(route) {
  return route.page === 'device' ? `#/device/${encodeURIComponent(route.id)}` : `#/${route.page}`;
}

/** Calls `onRoute(route)` now and on every hash change. Returns the function that stops listening. */
export function startRouter(onRoute) {
  const handler = () => onRoute(parseRoute(location.hash));
  window.addEventListener('hashchange', handler);
  handler();
  return () => window.removeEventListener('hashchange', handler);
}

export function navigate(route) {
  const hash = routeHash(route);
  if (location.hash !== hash) location.hash = hash;
}
