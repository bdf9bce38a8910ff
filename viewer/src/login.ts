// The login page, shown instead of the archive while nobody is signed in to
// a server that requires it. It asks the server for nothing but goes to the
// identity provider when the button is pressed. And the page shown instead
// of a share link's study when the link no longer opens it (or never did).

import { LoginReason, login, ShareEnd } from './auth';
import { t } from './i18n';

const MESSAGES: Record<LoginReason, Parameters<typeof t>[0]> = {
  needed: 'loginNeeded',
  ended: 'loginEnded',
  failed: 'loginFailed',
  unavailable: 'loginUnavailable',
};

export function renderLogin(root: HTMLElement, reason: LoginReason): void {
  root.innerHTML = `
    <section class="login-page" id="login-page" data-reason="${reason}">
      <h1>Phim</h1>
      <p class="login-msg${reason === 'needed' ? '' : ' err'}" id="login-msg">${t(MESSAGES[reason])}</p>
      <button type="button" id="login" class="login-button"${reason === 'unavailable' ? ' disabled' : ''}>${t('login')}</button>
      <p class="login-msg err" id="login-error" hidden></p>
    </section>`;
  const button = root.querySelector<HTMLButtonElement>('#login')!;
  const error = root.querySelector<HTMLElement>('#login-error')!;
  button.addEventListener('click', async () => {
    button.disabled = true;
    error.hidden = true;
    try {
      await login(); // the page leaves for the identity provider
    } catch (e) {
      console.warn(`login: ${e}`);
      error.textContent = t('loginNoProvider');
      error.hidden = false;
      button.disabled = false;
    }
  });
  button.focus();
}

/** Why a share link shows no study: the server's 401 (expired, not valid), or a 403 for this study. */
export type ShareRefusal = ShareEnd | 'forbidden';

const SHARE_MESSAGES: Record<ShareRefusal, Parameters<typeof t>[0]> = {
  expired: 'shareExpired',
  invalid: 'shareInvalid',
  forbidden: 'shareForbidden',
};

/**
 * The page of a share link that opens nothing here. No login button: the
 * person holding a link may have no account. `home` (the link's own study)
 * is offered when this page is another study.
 */
export function renderShareRefused(root: HTMLElement, reason: ShareRefusal, home: string | null): void {
  root.innerHTML = `
    <section class="login-page share-page" id="share-page" data-reason="${reason}">
      <h1>Phim</h1>
      <p class="login-msg err" id="share-msg">${t(SHARE_MESSAGES[reason])}</p>
      <p class="login-msg">${reason === 'forbidden' && home ? `<a id="share-home"></a>` : t('shareAskAgain')}</p>
    </section>`;
  const a = root.querySelector<HTMLAnchorElement>('#share-home');
  if (a && home) {
    a.href = home;
    a.textContent = t('shareOpenStudy');
  }
}
