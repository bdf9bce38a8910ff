// Keyboard shortcuts of the study view: one table drives both the key
// handler and the help panel, so the help cannot drift from the keys.

import { t } from './i18n';

export type Action =
  | 'next' | 'prev' | 'pageDown' | 'pageUp' | 'first' | 'last'
  | 'windowLevel' | 'zoom' | 'pan' | 'length' | 'angle' | 'ellipse'
  | 'preset0' | 'preset1' | 'preset2' | 'preset3' | 'preset4'
  | 'invert' | 'reset' | 'cine' | 'layout' | 'nextViewport' | 'sync' | 'tags' | 'help' | 'close';

type HelpKey = Parameters<typeof t>[0];

/** [keys shown in the help, KeyboardEvent.key values, action(s), help text]. */
const TABLE: Array<{ show: string; keys: string[]; actions: Action[]; help: HelpKey }> = [
  { show: '↓ → / ↑ ←', keys: ['ArrowDown', 'ArrowRight', 'ArrowUp', 'ArrowLeft'], actions: ['next', 'next', 'prev', 'prev'], help: 'key.scroll' },
  { show: 'PgDn / PgUp', keys: ['PageDown', 'PageUp'], actions: ['pageDown', 'pageUp'], help: 'key.page' },
  { show: 'Home / End', keys: ['Home', 'End'], actions: ['first', 'last'], help: 'key.ends' },
  { show: 'W', keys: ['w'], actions: ['windowLevel'], help: 'key.wl' },
  { show: 'Z', keys: ['z'], actions: ['zoom'], help: 'key.zoom' },
  { show: 'P', keys: ['p'], actions: ['pan'], help: 'key.pan' },
  { show: 'L', keys: ['l'], actions: ['length'], help: 'key.length' },
  { show: 'A', keys: ['a'], actions: ['angle'], help: 'key.angle' },
  { show: 'E', keys: ['e'], actions: ['ellipse'], help: 'key.ellipse' },
  { show: '0 1 2 3 4', keys: ['0', '1', '2', '3', '4'], actions: ['preset0', 'preset1', 'preset2', 'preset3', 'preset4'], help: 'key.presets' },
  { show: 'I', keys: ['i'], actions: ['invert'], help: 'key.invert' },
  { show: 'R', keys: ['r'], actions: ['reset'], help: 'key.reset' },
  { show: 'Space', keys: [' '], actions: ['cine'], help: 'key.cine' },
  { show: 'G', keys: ['g'], actions: ['layout'], help: 'key.layout' },
  { show: 'Tab', keys: ['Tab'], actions: ['nextViewport'], help: 'key.viewport' },
  { show: 'S', keys: ['s'], actions: ['sync'], help: 'key.sync' },
  { show: 'T', keys: ['t'], actions: ['tags'], help: 'key.tags' },
  { show: '? / H', keys: ['?', 'h'], actions: ['help', 'help'], help: 'key.help' },
  { show: 'Esc', keys: ['Escape'], actions: ['close'], help: 'key.close' },
];

const BY_KEY = new Map<string, Action>();
for (const row of TABLE) row.keys.forEach((k, i) => BY_KEY.set(k, row.actions[i]));

/** The action for a key press, or undefined (typing in a field, or with Ctrl/Alt/Meta). */
export function actionFor(e: KeyboardEvent): Action | undefined {
  const target = e.target as HTMLElement | null;
  const tag = target?.tagName;
  if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') {
    if (e.key !== 'Escape') return undefined;
  }
  if (e.ctrlKey || e.altKey || e.metaKey) return undefined;
  // Tab keeps moving the focus through controls; on the page itself it changes viewport.
  if (e.key === 'Tab' && target && target !== document.body) return undefined;
  return BY_KEY.get(e.key.length === 1 ? e.key.toLowerCase() : e.key) ?? BY_KEY.get(e.key);
}

export function helpHtml(): string {
  return `<h3>${t('shortcuts')}</h3><table class="keys">${TABLE.map(
    (r) => `<tr><td><kbd>${r.show}</kbd></td><td>${t(r.help)}</td></tr>`,
  ).join('')}</table><p class="msg">${t('key.mouse')}</p>`;
}
