// Entry point: a tiny path router between the study list and the study view.

import { renderList } from './list';
import { lang, onLangChange, setLang, t, Lang } from './i18n';
import { renderStudy, leaveStudy } from './study';
import { initCornerstone } from './tools';

const app = document.getElementById('app')!;
const crumb = document.getElementById('crumb')!;
const langSelect = document.getElementById('lang') as HTMLSelectElement;

/** The list URL (with its search) that "back" returns to. */
let listUrl = '/';

function navigate(path: string): void {
  history.pushState(null, '', path);
  route();
}

function route(): void {
  leaveStudy();
  const m = location.pathname.match(/^\/study\/([^/]+)\/?$/);
  if (m) {
    crumb.innerHTML = `<a href="${listUrl}" id="back">${t('back')}</a>`;
    crumb.querySelector('#back')!.addEventListener('click', (e) => {
      e.preventDefault();
      navigate(listUrl);
    });
    void renderStudy(app, decodeURIComponent(m[1]));
  } else {
    crumb.textContent = '';
    renderList(app, (path) => {
      listUrl = location.pathname + location.search;
      navigate(path);
    });
  }
}

document.getElementById('home')!.addEventListener('click', (e) => {
  e.preventDefault();
  navigate('/');
});
langSelect.value = lang();
document.documentElement.lang = lang();
langSelect.addEventListener('change', () => setLang(langSelect.value as Lang));
onLangChange(route);
window.addEventListener('popstate', route);
route();
// Start cornerstone (web workers, codecs) while the user reads the list, so
// the first image of a study is not kept waiting for it.
if ('requestIdleCallback' in window) requestIdleCallback(() => void initCornerstone(), { timeout: 2000 });
else setTimeout(() => void initCornerstone(), 500);
