// The console's entry point: the session, the shell (navigation, live status, the user and role,
// logout), the live feed and the page of the current route.
//
// data-testid attributes (stable; browser tests select by them):
//   app                      the application root
//   page-login               the login view; login-form, login-token, login-submit, login-error
//   user-name, user-role     the logged-in user; user-role has data-role = viewer|operator|admin
//   logout                   the logout button; logout-error says a logout was not done (no answer)
//   live-status              the live feed; data-state = connecting|live|reconnecting|stopped
//   live-down                says the feed is down and since when (data-since, epoch ms); main has
//                            data-live = connecting|live|down
//   feed-down                says the console's own feed (internal broker) is down, since when
//                            (data-since); main has data-feed = ok|down; pipeline-feed-state its badge
//   nav-fleet, nav-security, nav-pipeline, nav-anomalies   navigation links
//   page-fleet, page-device, page-security, page-pipeline, page-anomalies   each page's root
//   fleet-search, fleet-count, fleet-table, fleet-empty, fleet-state-counts
//   fleet-row                a fleet row; data-device-id, data-state; fleet-state is its badge
//   device-id, device-state  the device page's id and state badge (data-state)
//   device-unknown, device-facts, device-revoked
//   latest-values, latest-time; latest-value cells with data-field
//   device-health, health-time; health-value cells with data-field
//   charts, chart-window; chart (data-field) per numeric field; chart-status
//   command-form, command-name, command-params, command-ttl, command-submit,
//   command-status, command-error, command-name-error, command-params-error, command-ttl-error
//   command-readonly         shown instead of the form to a viewer
//   command-list; command-row with data-command-id and data-state; command-state its badge;
//   commands-unread           says the commands could not be read (those shown are as last read)
//   device-events / device-event-row (device-event-type, device-event-severity), device-security / device-security-row (data-reason,
//   data-source = distributor|gateway), device-anomalies / device-anomaly-row
//   security-events (the distributor's findings), security-reports (the gateways' reports);
//   security-row (data-device, data-reason, data-source) in both; security-by-reason /
//   security-reason-row (data-reason); security-by-device / security-device-row; security-total
//   pipeline-metric (data-metric = readingsPerSecond|writeFailures|deadLetters|feedDropped|feedRefused),
//   pipeline-services / pipeline-service-row (data-name), pipeline-brokers / pipeline-broker-row
//   (data-name), pipeline-bridge, pipeline-at
//   anomalies-table; anomaly-row (data-device, data-field, data-detector); anomaly-device-link;
//   anomalies-count
//   fatal-error              the server could not be reached at start

import { h, replaceChildren, setText, setData } from './dom.js';
import { dateTime, visible } from './format.js';
import { getSession, logout, setSessionChangedHandler, setUnauthorizedHandler, LiveFeed } from './api.js';
import { Store } from './store.js';
import { startRouter } from './router.js';
import { mountLogin } from './pages/login.js';
import { mountFleet } from './pages/fleet.js';
import { mountDevice } from './pages/device.js';
import { mountSecurity } from './pages/security.js';
import { mountPipeline } from './pages/pipeline.js';
import { mountAnomalies } from './pages/anomalies.js';

const NAV = [
  ['fleet', 'Fleet'],
  ['security', 'Security'],
  ['pipeline', 'Pipeline'],
  ['anomalies', 'Anomalies'],
];
const TITLES = { fleet: 'Fleet', device: 'Device', security: 'Security', pipeline: 'Pipeline', anomalies: 'Anomalies' };
const LIVE_TEXT = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', stopped: 'Not connected' };
/** Roles that may send commands (the server decides; this only hides a form that would be refused). */
const COMMANDERS = new Set(['operator', 'admin']);

const app = document.getElementById('app');

/** Everything that belongs to one logged-in session; torn down at logout or when it ends. */
let shell = null;
let ending = false;

function teardown() {
  if (!shell) return;
  shell.page?.unmount();
  shell.stopRouter?.();
  shell.live.stop();
  shell = null;
}

function showLogin(notice) {
  teardown();
  document.title = 'Log in · FieldStream console';
  const main = h('main', { id: 'main', class: 'login-main' });
  replaceChildren(app, h('header', { class: 'topbar' }, h('h1', { class: 'brand' }, 'FieldStream console')), main);
  mountLogin(main, { onLoggedIn: (session) => startShell(session, true), notice });
}

/** The session is gone (401, logout): a fresh CSRF token, then the login view. */
async function sessionEnded(notice) {
  if (ending) return;
  ending = true;
  teardown();
  try {
    await getSession();
  } catch {
    // The login view works once the server answers; its own request will say if it does not.
  }
  ending = false;
  showLogin(notice);
}

/** `focusPage`: after a login, focus goes to the page heading (the login form is gone). */
function startShell(session, focusPage = false) {
  teardown();
  const store = new Store();
  const liveStatus = h('span', { class: 'live-status', testid: 'live-status', role: 'status' });
  const main = h('main', { id: 'main', tabindex: -1, data: { live: 'connecting' } });
  // While the stream is down, every state and value on the pages is the console's word as of its
  // last event: a device shown online may have gone offline since. Said over every page, with
  // since when, and the pages marked (main[data-live="down"]), until a new snapshot replaces it all.
  const liveDown = h('p', { class: 'notice live-down', role: 'alert', testid: 'live-down', hidden: true });
  let down = false;
  // The console's own feed (its connection to the internal broker, in the `pipeline` view): cut,
  // it hears nothing of the fleet, and what the pages show is as of then, while this page's stream
  // is live. Said over every page too (main[data-feed="down"]).
  const feedDown = h('p', { class: 'notice live-down', role: 'alert', testid: 'feed-down', hidden: true });
  const showFeed = (p) => {
    const cut = Boolean(p && p.feedConnected === false);
    feedDown.hidden = !cut;
    const since = cut && typeof p.feedDownSince === 'number' ? p.feedDownSince : null;
    setData(feedDown, 'since', since);
    setText(feedDown, cut
      ? `The console is not receiving the fleet's data${since === null ? '' : ` since ${dateTime(since)}`} (its connection to the internal broker is down): device states and values are as it last heard them (a device shown online may have gone offline since).`
      : '');
    setData(main, 'feed', cut ? 'down' : 'ok');
  };
  const setLiveStatus = (state) => {
    setData(liveStatus, 'state', state);
    setText(liveStatus, LIVE_TEXT[state] ?? state);
    if (state === 'live') {
      down = false;
      liveDown.hidden = true;
      setData(liveDown, 'since', null);
      setData(main, 'live', 'live');
    } else if (state === 'reconnecting' && !down) {
      // A reopening after a failure is still down ('connecting' follows 'reconnecting'), and so
      // is the page opened meanwhile; a device page's own reopening of a live stream is not.
      down = true;
      const since = live.heardAt;
      setText(liveDown, since === null
        ? 'Not live: the console\'s live feed could not be opened, so no state shown here is the console\'s. Reconnecting…'
        : `Not live since ${dateTime(since)}: the live feed from the console is down, and every state and value shown is as the console said then (a device shown online may have gone offline since). Reconnecting…`);
      setData(liveDown, 'since', since);
      liveDown.hidden = false;
      setData(main, 'live', 'down');
    }
  };
  const live = new LiveFeed((name, data) => store.apply(name, data), setLiveStatus);
  setLiveStatus('connecting');
  const navLinks = new Map(NAV.map(([page, label]) => [page, h('a', { href: `#/${page}`, testid: `nav-${page}` }, label)]));
  const logoutError = h('span', { class: 'form-error', role: 'alert', testid: 'logout-error', hidden: true });
  const logoutButton = h('button', {
    type: 'button',
    class: 'link-button',
    testid: 'logout',
    on: {
      click: async () => {
        logoutButton.disabled = true;
        logoutError.hidden = true;
        try {
          await logout();
        } catch (err) {
          // Not answered (no connection, a server error): the session may live on, and this browser
          // still holds its cookie. Shown the login view, the next person at this browser would be
          // logged in as this user by a reload: the page stays, and says so.
          if (err.status === 0 || err.status >= 500) {
            setText(logoutError, `Not logged out: ${err.message} Try again.`);
            logoutError.hidden = false;
            logoutButton.disabled = false;
            return;
          }
          // Refused otherwise (401: the session is gone already; another user's session, which
          // api.js has sent this page to the login view for): the session is over for this page.
        }
        sessionEnded();
      },
    },
  }, 'Log out');

  replaceChildren(
    app,
    h('button', { type: 'button', class: 'skip-link', on: { click: () => main.focus() } }, 'Skip to content'),
    h('header', { class: 'topbar' },
      h('h1', { class: 'brand' }, 'FieldStream console'),
      h('nav', { 'aria-label': 'Console pages' }, h('ul', null, [...navLinks.values()].map((a) => h('li', null, a)))),
      h('div', { class: 'session' },
        liveStatus,
        h('span', { class: 'user' },
          h('span', { testid: 'user-name' }, session.user), ' ',
          h('span', { class: `role role-${COMMANDERS.has(session.role) || session.role === 'viewer' ? session.role : 'unknown'}`, testid: 'user-role', data: { role: session.role } }, session.role)),
        logoutButton,
        logoutError)),
    liveDown,
    feedDown,
    main,
  );

  store.subscribe('pipeline', () => showFeed(store.pipeline));
  shell = { store, live, page: null, stopRouter: null };
  const current = shell;
  let first = !focusPage;
  const openDevice = (id) => {
    location.hash = `#/device/${encodeURIComponent(id)}`;
  };

  const showRoute = (route) => {
    if (shell !== current) return;
    current.page?.unmount();
    current.page = null;
    main.replaceChildren();
    for (const [page, a] of navLinks) {
      // A device page belongs to the fleet: its link is marked, but it is not the current page.
      a.classList.toggle('active', page === route.page || (route.page === 'device' && page === 'fleet'));
      if (page === route.page) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (route.page === 'device') {
      if (store.detail && store.detail.row.id !== route.id) store.detail = null;
      live.setDevice(route.id);
    } else {
      live.setDevice(null);
      store.detail = null;
    }
    const root = h('div', { class: `page page-${route.page}`, testid: `page-${route.page}` });
    main.append(root);
    const ctx = { store, openDevice, id: route.id, canCommand: COMMANDERS.has(session.role), user: session.user };
    const mount = { fleet: mountFleet, device: mountDevice, security: mountSecurity, pipeline: mountPipeline, anomalies: mountAnomalies }[route.page];
    current.page = mount(root, ctx);
    // A device page's id is the URL's, any text a link holds (the console refuses what is no device id).
    document.title = `${route.page === 'device' ? visible(route.id) : TITLES[route.page]} · FieldStream console`;
    // After a navigation, focus goes to the new page's heading, as a page load would put it.
    if (!first) root.querySelector('h2')?.focus();
    first = false;
  };
  current.stopRouter = startRouter(showRoute);
  live.start();
}

function showFatal(err) {
  replaceChildren(
    app,
    h('main', { id: 'main', class: 'login-main' },
      h('div', { class: 'login-box', testid: 'fatal-error', role: 'alert' },
        h('h2', null, 'The console server cannot be reached'),
        h('p', null, err.message),
        h('button', { type: 'button', class: 'primary', on: { click: boot } }, 'Try again'))),
  );
}

async function boot() {
  setUnauthorizedHandler(() => sessionEnded('Your session has ended: log in again.'));
  // This page's session was replaced by a login in another tab (the tabs share one cookie): what
  // the page shows, and would send, is no longer the browser's user. It asks for a login again.
  setSessionChangedHandler((s) => sessionEnded(s.authenticated
    ? `This browser was logged in again in another tab, as ${s.user}: log in again here.`
    : 'Your session has ended: log in again.'));
  let session;
  try {
    session = await getSession();
  } catch (err) {
    showFatal(err);
    return;
  }
  if (session.authenticated) startShell(session);
  else showLogin();
}

boot();
