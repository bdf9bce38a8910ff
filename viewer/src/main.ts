// Entry point: a tiny path router between the study list and the study view,
// behind the login page when the server requires a sign-in (auth.ts). A
// share link (`/study/<uid>?share=…`) opens its study only: no login, no
// list, no priors, a banner with its expiry, and a page of its own once the
// server refuses it.

import { renderList } from './list';
import { formatDateTime, lang, onLangChange, setLang, t, Lang } from './i18n';
import { renderStudy, leaveStudy } from './study';
import { initCornerstone } from './tools';
import {
  currentUser, displayName, loadAuthConfig, login, LoginReason, logout, onUserChange, ShareEnd, shareHome, ShareLink,
  sharedLink, signedOut, startAuth,
} from './auth';
import { renderLogin, renderShareRefused } from './login';

const app = document.getElementById('app')!;
const crumb = document.getElementById('crumb')!;
const langSelect = document.getElementById('lang') as HTMLSelectElement;
const userBox = document.getElementById('user')!;

/** The list URL (with its search) that "back" returns to. */
let listUrl = '/';
/** Why the login page shows, when it does. */
let loginReason: LoginReason = 'needed';
/** Set once the server refused this page's share link. */
let shareEnd: ShareEnd | null = null;
let started = false;

function navigate(path: string): void {
  history.pushState(null, '', path);
  route();
}

function route(): void {
  leaveStudy();
  const link = sharedLink();
  if (link) {
    routeShared(link);
    return;
  }
  if (signedOut()) {
    // Nothing of the archive is asked for until someone is signed in.
    crumb.textContent = '';
    renderLogin(app, loginReason);
    return;
  }
  startCornerstone();
  const m = location.pathname.match(/^\/study\/([^/]+)\/?$/);
  if (m) {
    crumb.innerHTML = `<a href="${listUrl}" id="back">${t('back')}</a>`;
    crumb.querySelector('#back')!.addEventListener('click', (e) => {
      e.preventDefault();
      navigate(listUrl);
    });
    void renderStudy(app, decodeURIComponent(m[1]), { series: new URLSearchParams(location.search).get('series') });
  } else {
    crumb.textContent = '';
    renderList(app, (path) => {
      listUrl = location.pathname + location.search;
      navigate(path);
    });
  }
}

/**
 * The study of a share link, and only that: no list (the link reaches
 * nothing else), no priors; the banner says until when the link works.
 */
function routeShared(link: ShareLink): void {
  const home = shareHome(link);
  if (shareEnd) {
    crumb.textContent = '';
    renderShareRefused(app, shareEnd, home);
    return;
  }
  let m = location.pathname.match(/^\/study\/([^/]+)\/?$/);
  if (!m && home) {
    // Not a study page (the list, a typed URL): the link's own study.
    history.replaceState(null, '', home);
    m = location.pathname.match(/^\/study\/([^/]+)\/?$/);
  }
  renderShareBanner(link);
  if (!m) {
    renderShareRefused(app, 'invalid', null);
    return;
  }
  startCornerstone();
  void renderStudy(app, decodeURIComponent(m[1]), {
    series: new URLSearchParams(location.search).get('series'),
    priors: false,
    onForbidden: () => renderShareRefused(app, 'forbidden', home),
  });
}

/** "Shared link — expires <local date and time>" in the top bar (the expiry from the token: display only). */
function renderShareBanner(link: ShareLink): void {
  crumb.innerHTML = `<span class="share-banner" id="share-banner"></span>`;
  const banner = crumb.querySelector<HTMLElement>('#share-banner')!;
  banner.textContent = link.exp !== null ? `${t('sharedLink')} — ${t('shareExpires')} ${formatDateTime(link.exp)}` : t('sharedLink');
  banner.dataset.expires = link.exp !== null ? String(link.exp) : '';
}

/** The signed-in user's name and the "Log out" button in the top bar. */
function renderUser(): void {
  const u = currentUser();
  userBox.hidden = !u;
  const name = userBox.querySelector<HTMLElement>('#user-name')!;
  const button = userBox.querySelector<HTMLButtonElement>('#logout')!;
  name.textContent = u ? displayName(u) : '';
  name.title = u ? `${t('signedInAs')} ${displayName(u)}` : '';
  // When the access token expires (seconds since 1970; not the token): it changes with each renewal.
  userBox.dataset.expires = u?.expires_at ? String(u.expires_at) : '';
  button.textContent = t('logout');
}

let cornerstoneStarted = false;
/**
 * Start cornerstone (web workers, codecs) while the user reads the list, so
 * the first image of a study is not kept waiting for it.
 */
function startCornerstone(): void {
  if (cornerstoneStarted) return;
  cornerstoneStarted = true;
  if ('requestIdleCallback' in window) requestIdleCallback(() => void initCornerstone(), { timeout: 2000 });
  else setTimeout(() => void initCornerstone(), 500);
}

async function start(): Promise<void> {
  let cfg;
  try {
    cfg = await loadAuthConfig();
  } catch (e) {
    console.warn(`auth config: ${e}`);
    app.innerHTML = `<div class="msg err" id="auth-error">${t('authConfigError')}: ${(e instanceof Error ? e.message : String(e)).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)}
      <button type="button" id="auth-retry">${t('retry')}</button></div>`;
    app.querySelector('#auth-retry')!.addEventListener('click', () => void start());
    return;
  }
  const state = await startAuth(
    cfg,
    (reason) => {
      loginReason = reason;
      route();
    },
    (reason) => {
      shareEnd = reason;
      route();
    },
  );
  if (state === 'resume') {
    // Signed in before this reload: back through the identity provider.
    app.innerHTML = `<div class="msg" id="auth-resume">${t('loading')}</div>`;
    try {
      await login();
      return;
    } catch (e) {
      console.warn(`login: ${e}`);
      loginReason = 'needed';
    }
  } else if (state !== 'share' && state !== 'open' && state !== 'in') loginReason = state;
  started = true;
  route();
}

document.getElementById('home')!.addEventListener('click', (e) => {
  e.preventDefault();
  // A share link's home is its study: the list is not reachable with it.
  const link = sharedLink();
  if (started) navigate((link && shareHome(link)) || '/');
});
userBox.querySelector('#logout')!.addEventListener('click', () => {
  loginReason = 'needed';
  void logout();
});
langSelect.value = lang();
document.documentElement.lang = lang();
langSelect.addEventListener('change', () => setLang(langSelect.value as Lang));
onUserChange(renderUser);
onLangChange(() => {
  renderUser();
  if (started) route();
});
window.addEventListener('popstate', () => {
  if (started) route();
});
renderUser();
void start();
