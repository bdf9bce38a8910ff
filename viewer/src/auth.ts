// Signing in with OpenID Connect when the server requires it.
//
// The server says what it needs at GET /api/auth/config (public):
//   {"required": bool, "oidc": null | {"issuer", "client_id", "audience", "scope"}}
// (a 404 there, or the viewer's own index.html answering, is an older server:
// nothing required). With `required`, the viewer signs the user in with the
// authorization code flow and PKCE (oidc-client-ts) against the issuer, as the
// public client `client_id`, redirect URI `<origin>/auth/callback` and
// post-logout redirect URI `<origin>/`, which the identity provider must have
// registered. It asks for `resource=<audience>` (RFC 8707) in the authorization
// and in every token request, so that the access token is meant for this API.
//
// The tokens live in memory only (a reload signs in again, which the identity
// provider's own session makes a redirect without a form); only the PKCE state
// of a sign-in in progress is kept in sessionStorage, for the redirect. The
// access token is renewed with the refresh token before it expires, and sent
// on every request the viewer makes: `authFetch` for its own fetches,
// `authHeaders` for cornerstone's image loader, `setAuthImage` for <img>.
// A 401 that a renewal cannot cure ends the session: back to the login page.
//
// A share link (`?share=phims_…` in the page's URL, from
// POST /api/studies/{study}/share or the IHE IID redirect) replaces all of
// that: its token is the bearer of every request, nobody is asked to log in,
// and a 401 ends the link (expired or not valid), not a session. The token
// stays in the URL, which is what the link is (a reload works), and is never
// written to web storage. Its payload (study, series, expiry) is read for
// display and navigation only; the server alone decides what it opens.

import { InMemoryWebStorage, User, UserManager, WebStorageStateStore } from 'oidc-client-ts';

export interface OidcConfig {
  issuer: string;
  client_id: string;
  audience?: string | null;
  scope?: string | null;
}

export interface AuthConfig {
  required: boolean;
  oidc: OidcConfig | null;
}

export const CALLBACK_PATH = '/auth/callback';
const DEFAULT_SCOPE = 'openid profile offline_access';

/** Why the login page is shown. */
export type LoginReason = 'needed' | 'ended' | 'failed' | 'unavailable';

/** Why a share link no longer opens anything: the server said it expired, or refused it otherwise. */
export type ShareEnd = 'expired' | 'invalid';

/** A share link of this page's URL, and what its token's payload says (display only, never trusted). */
export interface ShareLink {
  token: string;
  /** Study Instance UID the link was made for (payload `s`), null when unreadable. */
  study: string | null;
  /** Series Instance UID of a series link (payload `se`). */
  series: string | null;
  /** Expiry, seconds since the epoch (payload `exp`). */
  exp: number | null;
}

export const SHARE_PREFIX = 'phims_';

/**
 * Set in this tab's sessionStorage while someone is signed in (a flag, never a
 * token): a reload then goes straight back through the identity provider,
 * whose session makes that a redirect without a form, instead of stopping
 * at the login page. Taken when the redirect starts, so a failing provider
 * cannot make a loop of it.
 */
const RESUME_KEY = 'phim.auth.resume';

let config: AuthConfig = { required: false, oidc: null };
let manager: UserManager | null = null;
let user: User | null = null;
let renewing: Promise<User | null> | null = null;
let renewTimer = 0;
let ended: ((reason: LoginReason) => void) | null = null;
const userListeners: Array<(u: User | null) => void> = [];
let share: ShareLink | null = null;
let shareEnd: ShareEnd | null = null;
let shareEnded: ((reason: ShareEnd) => void) | null = null;

/** A request refused because the session is over (the login page is being shown). */
export class SessionEnded extends Error {
  constructor() {
    super('not signed in');
  }
}

/** Fetches the server's authentication settings. Throws when the server cannot say. */
export async function loadAuthConfig(): Promise<AuthConfig> {
  const res = await fetch(`${location.origin}/api/auth/config`, { headers: { Accept: 'application/json' } });
  if (res.status === 404) return { required: false, oidc: null };
  const type = res.headers.get('content-type') ?? '';
  if (res.ok && !type.includes('json')) return { required: false, oidc: null }; // the SPA fallback: an older server
  if (!res.ok) throw new Error(`${res.status} ${res.statusText}: /api/auth/config`);
  const body = (await res.json()) as Partial<AuthConfig>;
  const oidc = body.oidc && typeof body.oidc.issuer === 'string' && typeof body.oidc.client_id === 'string' ? body.oidc : null;
  return { required: body.required === true, oidc };
}

/**
 * Reads a share token's payload (base64url JSON between `phims_` and the
 * `.`). For display and navigation only: the signature is the server's to check.
 */
export function readShareToken(token: string): ShareLink {
  const link: ShareLink = { token, study: null, series: null, exp: null };
  if (!token.startsWith(SHARE_PREFIX)) return link;
  try {
    const b64 = token.slice(SHARE_PREFIX.length).split('.')[0].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as { s?: unknown; se?: unknown; exp?: unknown };
    if (typeof claims.s === 'string') link.study = claims.s;
    if (typeof claims.se === 'string') link.series = claims.se;
    if (typeof claims.exp === 'number' && Number.isFinite(claims.exp)) link.exp = claims.exp;
  } catch {
    // Unreadable: the server will say why it refuses the token.
  }
  return link;
}

/** The share link this page was opened with, or null. */
export function sharedLink(): ShareLink | null {
  return share;
}

/** The page of the shared study (what the link opens), with the token, for in-app navigation. */
export function shareHome(link: ShareLink): string | null {
  if (!link.study) return null;
  const p = new URLSearchParams({ share: link.token });
  if (link.series) p.set('series', link.series);
  return `/study/${encodeURIComponent(link.study)}?${p}`;
}

/**
 * Sets the viewer's authentication up from the server's settings, finishing a
 * sign-in when this page is the identity provider's redirect back.
 * `onEnded` is called when a signed-in session ends by itself, `onShareEnded`
 * when the server refuses the page's share link (401).
 * Returns where the app stands: `share` (opened with a share link: nobody
 * logs in), `open` (nothing required: as without authentication), `in`
 * (signed in), `resume` (signed in before a reload of this tab: call
 * {@link login}), or a reason to show the login page.
 */
export async function startAuth(
  cfg: AuthConfig,
  onEnded: (reason: LoginReason) => void,
  onShareEnded?: (reason: ShareEnd) => void,
): Promise<'share' | 'open' | 'in' | 'resume' | LoginReason> {
  config = cfg;
  ended = onEnded;
  shareEnded = onShareEnded ?? null;
  const token = new URLSearchParams(location.search).get('share');
  if (token) {
    // Whatever the server requires and whoever was signed in in this tab: the link decides.
    share = readShareToken(token);
    return 'share';
  }
  if (!cfg.required) {
    if (location.pathname === CALLBACK_PATH) history.replaceState(null, '', '/');
    return 'open';
  }
  if (!cfg.oidc) return 'unavailable';
  const { oidc } = cfg;
  const resource = oidc.audience || undefined;
  manager = new UserManager({
    authority: oidc.issuer,
    client_id: oidc.client_id,
    redirect_uri: `${location.origin}${CALLBACK_PATH}`,
    post_logout_redirect_uri: `${location.origin}/`,
    response_type: 'code',
    scope: oidc.scope || DEFAULT_SCOPE,
    resource,
    extraTokenParams: resource ? { resource } : undefined,
    userStore: new WebStorageStateStore({ store: new InMemoryWebStorage() }),
    stateStore: new WebStorageStateStore({ store: sessionStorage, prefix: 'phim.oidc.' }),
    // Renewal is ours (scheduleRenewal): the library's would not send `resource`.
    automaticSilentRenew: false,
    // The access token is for this API, not for the provider's userinfo; the
    // name comes from the ID token.
    loadUserInfo: false,
    monitorSession: false,
    // RFC 7009: a revocation's 200 has no meaningful body; some providers
    // (oidc-provider) send it empty as text/plain.
    revokeTokenAdditionalContentTypes: ['text/plain'],
  });
  if (location.pathname === CALLBACK_PATH) {
    try {
      const u = await manager.signinRedirectCallback();
      const back = (u.state as { returnTo?: unknown } | undefined)?.returnTo;
      history.replaceState(null, '', typeof back === 'string' && back.startsWith('/') && !back.startsWith('//') ? back : '/');
      setUser(u);
      return 'in';
    } catch (e) {
      console.warn(`sign-in did not complete: ${errorText(e)}`);
      history.replaceState(null, '', '/');
      return 'failed';
    }
  }
  return sessionStorage.getItem(RESUME_KEY) === '1' ? 'resume' : 'needed';
}

/** True when the server requires a sign-in and nobody is signed in (nor a share link used): no data may be asked for. */
export function signedOut(): boolean {
  return config.required && user === null && share === null;
}

/** True when requests carry a token (the server requires one, or a share link is used). */
export function authActive(): boolean {
  return share !== null || (config.required && manager !== null);
}

/**
 * The server refused the share link (a 401, whose body says why): the link
 * is over for this page. `why` is the server's text; without one, the
 * payload's expiry picks the message (display only).
 */
function endShare(why: string): void {
  if (!share || shareEnd) return;
  const expired = why ? /expired/i.test(why) : share.exp !== null && share.exp * 1000 <= Date.now();
  shareEnd = expired ? 'expired' : 'invalid';
  shareEnded?.(shareEnd);
}

export function currentUser(): User | null {
  return user;
}

/** The signed-in person's name for the top bar. */
export function displayName(u: User): string {
  const p = u.profile;
  return String(p.name || p.preferred_username || p.email || p.sub);
}

export function onUserChange(f: (u: User | null) => void): void {
  userListeners.push(f);
}

/** Goes to the identity provider's login; comes back to the current page. */
export async function login(): Promise<void> {
  if (!manager) throw new Error('no identity provider configured');
  const here = location.pathname === CALLBACK_PATH ? '/' : location.pathname + location.search;
  sessionStorage.removeItem(RESUME_KEY);
  await manager.signinRedirect({ state: { returnTo: here } });
}

/** Ends the session here and at the identity provider (when it offers RP-initiated logout). */
export async function logout(): Promise<void> {
  if (!manager) return;
  const u = user;
  setUser(null);
  const endSession = await manager.metadataService.getEndSessionEndpoint().catch(() => undefined);
  const revocation = await manager.metadataService.getRevocationEndpoint().catch(() => undefined);
  if (u && revocation) {
    // The refresh token would otherwise outlive the logout; failure to revoke does not keep anyone in.
    await manager.revokeTokens(['refresh_token']).catch((e) => console.warn(`token revocation: ${errorText(e)}`));
  }
  if (endSession && u?.id_token) {
    await manager.signoutRedirect({ id_token_hint: u.id_token });
    return;
  }
  await manager.removeUser();
  ended?.('needed');
}

function setUser(u: User | null): void {
  user = u;
  if (u) sessionStorage.setItem(RESUME_KEY, '1');
  else sessionStorage.removeItem(RESUME_KEY);
  clearTimeout(renewTimer);
  if (u) scheduleRenewal(u);
  userListeners.forEach((f) => f(u));
}

/**
 * Renews the access token before it expires: when a fifth of its life (at most
 * a minute) is left. A failed renewal is tried again while the token is valid.
 */
function scheduleRenewal(u: User): void {
  const left = u.expires_in;
  if (left === undefined || !u.refresh_token) return;
  const margin = Math.min(60, Math.max(1, left / 5));
  renewTimer = window.setTimeout(() => void renew().catch(() => undefined), Math.max(0, left - margin) * 1000);
}

/** One renewal at a time; resolves to the renewed user, or null when the session could not be renewed. */
function renew(): Promise<User | null> {
  if (renewing) return renewing;
  const m = manager;
  const u = user;
  if (!m || !u?.refresh_token) return Promise.resolve(null);
  renewing = (async () => {
    try {
      const next = await m.signinSilent({
        resource: config.oidc?.audience || undefined,
        extraTokenParams: config.oidc?.audience ? { resource: config.oidc.audience } : undefined,
      });
      if (user !== u) return null; // logged out meanwhile
      setUser(next);
      return next;
    } catch (e) {
      console.warn(`token renewal failed: ${errorText(e)}`);
      if (user === u) {
        const left = u.expires_in ?? 0;
        if (left > 5) renewTimer = window.setTimeout(() => void renew().catch(() => undefined), Math.min(10, left / 2) * 1000);
        else endSession();
      }
      return null;
    } finally {
      renewing = null;
    }
  })();
  return renewing;
}

function endSession(): void {
  if (!user) return;
  setUser(null);
  void manager?.removeUser();
  ended?.('ended');
}

/** A valid access token, renewed first when it has (nearly) expired; null when open or signed out. */
export async function accessToken(): Promise<string | null> {
  if (share) {
    if (shareEnd) throw new SessionEnded();
    return share.token;
  }
  if (!authActive()) return null;
  let u = user;
  if (!u) throw new SessionEnded();
  if ((u.expires_in ?? Infinity) < 5) u = (await renew()) ?? (u.expired ? null : u);
  if (!u) {
    endSession();
    throw new SessionEnded();
  }
  return u.access_token;
}

/** The Authorization header for a request to the server ({} when nothing is required). */
export async function authHeaders(): Promise<Record<string, string>> {
  const tok = await accessToken();
  return tok ? { Authorization: `Bearer ${tok}` } : {};
}

/**
 * A 401 from the server on a signed-in request: renewal is tried once;
 * true when the caller may retry with the new token. Otherwise the session ends.
 */
export async function unauthorized(sentToken: string | null): Promise<boolean> {
  if (share) {
    endShare('');
    return false;
  }
  if (!authActive() || !user) return false;
  if (sentToken && user.access_token !== sentToken) return true; // renewed meanwhile
  const next = await renew();
  if (next) return true;
  endSession();
  return false;
}

/** fetch() with the access token; a 401 is retried once after a renewal, then ends the session. */
export async function authFetch(url: string, init: RequestInit = {}): Promise<Response> {
  if (share) {
    const headers = new Headers(init.headers);
    headers.set('Authorization', `Bearer ${await accessToken()}`);
    const res = await fetch(url, { ...init, headers });
    if (res.status !== 401) return res;
    endShare(await res.text().catch(() => ''));
    throw new SessionEnded();
  }
  if (!authActive()) return fetch(url, init);
  for (let attempt = 0; ; attempt++) {
    const tok = await accessToken();
    const headers = new Headers(init.headers);
    if (tok) headers.set('Authorization', `Bearer ${tok}`);
    const res = await fetch(url, { ...init, headers });
    if (res.status !== 401) return res;
    // Refused again with a fresh token, or not renewable: the session is over.
    if (attempt > 0) endSession();
    if (attempt > 0 || !(await unauthorized(tok))) throw new SessionEnded();
  }
}

/**
 * Shows `url` in `img`: as its src when nothing is required (the browser's
 * own lazy loading), else fetched with the token into a blob: URL once the
 * image comes near the screen. A failure fires the image's `error` event.
 */
export function setAuthImage(img: HTMLImageElement, url: string): void {
  if (!authActive()) {
    img.src = url;
    return;
  }
  const load = async () => {
    try {
      const res = await authFetch(url, { headers: { Accept: 'image/jpeg, image/png, image/*' } });
      if (!res.ok) throw new Error(`${res.status}`);
      const blobUrl = URL.createObjectURL(await res.blob());
      const done = () => URL.revokeObjectURL(blobUrl); // the decoded image stays on screen
      img.addEventListener('load', done, { once: true });
      img.addEventListener('error', done, { once: true });
      img.src = blobUrl;
    } catch {
      img.dispatchEvent(new Event('error'));
    }
  };
  if (!('IntersectionObserver' in window)) {
    void load();
    return;
  }
  const seen = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) {
      seen.disconnect();
      void load();
    }
  }, { rootMargin: '200px' });
  seen.observe(img.parentElement ?? img); // an image without a source has no size
}

function errorText(e: unknown): string {
  // oidc-client-ts errors carry the protocol's error code and description, never a token.
  const err = e as { error?: string; error_description?: string; message?: string };
  return [err.error, err.error_description].filter(Boolean).join(': ') || err.message || String(e);
}
