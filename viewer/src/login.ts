// The login page, shown instead of the archive while nobody is signed in to
// a server that requires it. It asks the server for nothing but goes to the
// identity provider when the button is pressed.

import { LoginReason, login } from './auth';
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
