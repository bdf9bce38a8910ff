// The study view: series panel, toolbar, the viewport layout, the tag
// browser and help panels, the EMR link, and the keyboard. Each viewport is
// a Pane (viewport.ts); tools are in tools.ts.

import { RenderingEngine, utilities as csUtils } from '@cornerstonejs/core';

import { DicomJson, Forbidden, getStudy, instanceMetadata, num, searchSeries, str, T } from './api';
import { emrAnchor, EmrUnavailable, studyEmrLink } from './emr';
import { authFetch } from './auth';
import { t } from './i18n';
import { Layout, LAYOUT_ORDER, LayoutName } from './layout';
import { markActiveSeries, renderPriors, renderSeriesPanel } from './series-panel';
import { Action, actionFor, helpHtml } from './shortcuts';
import { openTagBrowser } from './tags';
import { createToolGroup, destroyToolGroup, initCornerstone, LEFT_TOOLS, LeftTool, measurements, Measurement, setLeftTool, ToolGroup } from './tools';
import { SliceSync } from './sync';
import { Pane, Preset, PRESET_ORDER, StudyContext } from './viewport';

const ENGINE_ID = 'phim-engine';

/** Exposed for the end-to-end tests (`window.__viewer`); reads the active pane. */
interface ViewerHooks {
  state: { ready: boolean; error: string | null; leftTool: LeftTool; layout: LayoutName; emr: string };
  panes(): number;
  active(): number;
  imageIndex(): number;
  /** Image index shown by pane `i` (-1 when empty). */
  paneImageIndex(i: number): number;
  /** Whether linked scrolling is on. */
  linked(): boolean;
  imageCount(): number;
  cachedCount(): number;
  playing(): boolean;
  /** Canvas CSS pixel of the active pane -> image pixel (column, row). */
  canvasToImage(p: [number, number]): [number, number];
  /** Image pixel (column, row) -> canvas CSS pixel of the active pane. */
  imageToCanvas(p: [number, number]): [number, number];
  measurements(): Measurement[];
  lengths(): Array<{ length: number; unit: string }>;
}

declare global {
  interface Window {
    __viewer?: ViewerHooks;
  }
}

/**
 * One rendering engine for the page, made with the first study view and
 * never destroyed: cornerstone cannot cancel an image request already sent
 * (a viewport's first image, a scroll), and when it lands after the study
 * view was left it calls its viewport's render(), which goes through the
 * engine. With the engine alive that render is a no-op for the disabled
 * viewport; a destroyed engine made it throw ("Cannot read properties of
 * undefined (reading 'renderViewport')").
 */
let engine: RenderingEngine | null = null;
/** The panes of the study view shown, when one is. */
let shownLayout: Layout | null = null;
/** Counts the study views opened and left: a renderStudy still loading when its view was left stops. */
let visit = 0;
let keyHandler: ((e: KeyboardEvent) => void) | null = null;
let resizeObserver: ResizeObserver | null = null;

export function leaveStudy(): void {
  visit++;
  if (keyHandler) document.removeEventListener('keydown', keyHandler);
  keyHandler = null;
  resizeObserver?.disconnect();
  resizeObserver = null;
  if (shownLayout) {
    // The panes first (cine, prefetch, their viewports), then the tool group; the engine stays.
    shownLayout.destroy();
    shownLayout = null;
    destroyToolGroup();
  }
  delete window.__viewer;
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export interface StudyOptions {
  /** Series Instance UID to show first (`?series=` in the URL), when the study has it. */
  series?: string | null;
  /** Whether to list the patient's other studies (not through a share link: it reaches this study only). */
  priors?: boolean;
  /** Called instead of the panel's error message when the server refuses the study (403). */
  onForbidden?: () => void;
}

export async function renderStudy(root: HTMLElement, studyUid: string, opts: StudyOptions = {}): Promise<void> {
  const thisVisit = visit;
  root.innerHTML = `
    <div class="study">
      <aside class="study-side">
        <div id="emr"></div>
        <div class="series-panel" id="series-panel"><div class="msg">${t('loading')}</div></div>
      </aside>
      <section class="viewer-col">
        <div class="toolbar" id="toolbar">
          ${(Object.keys(LEFT_TOOLS) as LeftTool[])
            .map((k) => `<button data-tool="${k}" id="tool-${k}">${t(k)}</button>`)
            .join('')}
          <select id="preset" aria-label="${t('presets')}">
            <option value="">${t('presets')}…</option>
            ${PRESET_ORDER.map((p) => `<option value="${p}">${p === 'default' ? t('defaultWindow') : t(p)}</option>`).join('')}
          </select>
          <button id="invert">${t('invert')}</button>
          <button id="reset">${t('reset')}</button>
          <span class="sep"></span>
          <button id="cine" title="${t('cine')}">▶ ${t('play')}</button>
          <label class="fps"><input id="fps" type="number" min="1" max="120" value="10"> ${t('fps')}</label>
          <span class="sep"></span>
          <button id="sync" title="${t('key.sync')}">${t('sync')}</button>
          <span class="layouts" role="group" aria-label="${t('layout')}">
            ${LAYOUT_ORDER.map((l) => `<button data-layout="${l}" id="layout-${l}" title="${t('layout')} ${l.replace('x', '×')}">${l.replace('x', '×')}</button>`).join('')}
          </span>
          <button id="tags-open">${t('tags')}</button>
          <button id="download" title="${t('download')}: ${t('downloadTitle')}" aria-label="${t('download')}">⤓</button>
          <button id="help-open" title="${t('shortcuts')}">?</button>
        </div>
        <div class="work">
          <div class="grid" id="grid"></div>
          <aside class="side-panel tags" id="tags-panel" hidden></aside>
        </div>
        <div class="hint msg">${t('hint')}</div>
      </section>
      <div class="dialog" id="help-panel" hidden></div>
    </div>`;
  const panel = root.querySelector<HTMLElement>('#series-panel')!;
  const grid = root.querySelector<HTMLElement>('#grid')!;
  const tagsPanel = root.querySelector<HTMLElement>('#tags-panel')!;
  const helpPanel = root.querySelector<HTMLElement>('#help-panel')!;
  let layout: Layout | null = null;
  const sync = new SliceSync();
  const active = (): Pane | undefined => layout?.activePane();
  let loadError: string | null = null;
  const state: ViewerHooks['state'] = {
    get ready() {
      return active()?.ready ?? false;
    },
    get error() {
      return loadError ?? active()?.error ?? null;
    },
    leftTool: 'windowLevel',
    layout: '1x1',
    emr: 'loading',
  };

  window.__viewer = {
    state,
    panes: () => layout?.panes.length ?? 0,
    active: () => active()?.index ?? -1,
    imageIndex: () => active()?.imageIndex() ?? -1,
    paneImageIndex: (i) => layout?.panes[i]?.imageIndex() ?? -1,
    linked: () => sync.on,
    imageCount: () => active()?.frames.length ?? 0,
    cachedCount: () => active()?.cachedCount() ?? 0,
    playing: () => active()?.playing ?? false,
    canvasToImage: (p) => {
      const vp = active()!.viewport()!;
      const ij = csUtils.worldToImageCoords(vp.getCurrentImageId()!, vp.canvasToWorld(p));
      if (!ij) throw new Error('point outside the image');
      return [ij[0], ij[1]];
    },
    imageToCanvas: (p) => {
      const vp = active()!.viewport()!;
      const world = csUtils.imageToWorldCoords(vp.getCurrentImageId()!, p);
      if (!world) throw new Error('no image geometry');
      const c = vp.worldToCanvas(world);
      return [c[0], c[1]];
    },
    measurements,
    lengths: () => measurements().filter((m) => m.tool === 'length').map((m) => ({ length: m.value, unit: m.unit })),
  };

  void showEmrLink(root.querySelector<HTMLElement>('#emr')!, studyUid, state);

  let study: DicomJson | undefined;
  let series: DicomJson[];
  try {
    // The queries go out first; cornerstone starts while they are on the wire.
    const queries = Promise.all([getStudy(studyUid), searchSeries(studyUid)]);
    await initCornerstone();
    [study, series] = await queries;
    if (!study) throw new Error(`${t('noSuchStudy')} ${studyUid}`);
  } catch (e) {
    loadError = String(e);
    if (thisVisit !== visit) return; // left while loading
    if (e instanceof Forbidden && opts.onForbidden) {
      leaveStudy();
      opts.onForbidden();
      return;
    }
    panel.innerHTML = `<div class="msg err">${t('error')}: ${esc(e instanceof Error ? e.message : String(e))}</div>`;
    return;
  }
  if (thisVisit !== visit) return; // left while loading
  series.sort((a, b) => (num(a, T.SeriesNumber) ?? 0) - (num(b, T.SeriesNumber) ?? 0));

  engine ??= new RenderingEngine(ENGINE_ID);
  const group: ToolGroup = createToolGroup();
  const fpsInput = root.querySelector<HTMLInputElement>('#fps')!;
  const cineButton = root.querySelector<HTMLButtonElement>('#cine')!;
  const syncToolbar = () => {
    const p = active();
    cineButton.textContent = p?.playing ? `⏸ ${t('pause')}` : `▶ ${t('play')}`;
    cineButton.classList.toggle('active', !!p?.playing);
    cineButton.disabled = !p || p.frames.length < 2;
    if (p && document.activeElement !== fpsInput) fpsInput.value = String(p.fps);
    markActiveSeries(panel, p?.seriesUid ?? null);
  };
  let tagsTimer = 0;
  let tagsSop = '';
  const syncButton = root.querySelector<HTMLButtonElement>('#sync')!;
  /** Links the ready panes, `moved` following the others when it just loaded a series. */
  const relink = (moved?: Pane) => {
    if (!sync.on || !layout) return;
    const panes = layout.panes.filter((p) => p.ready);
    const act = active();
    const reference = act && act !== moved && act.ready ? act : (panes.find((p) => p !== moved) ?? moved ?? act);
    if (reference) sync.link(panes, reference);
  };
  const toggleSync = () => {
    if (sync.on) sync.unlink();
    else {
      sync.on = true;
      relink();
    }
    syncButton.classList.toggle('active', sync.on);
  };
  const context: StudyContext = {
    engine,
    studyUid,
    study,
    series,
    firstSeries: opts.series ?? undefined,
    // The tag browser follows the active pane's image.
    onImage: (p) => {
      sync.follow(p);
      if (tagsPanel.hidden || p !== active() || p.currentFrame()?.sop === tagsSop) return;
      clearTimeout(tagsTimer);
      tagsTimer = window.setTimeout(() => showTags(false), 150);
    },
    afterLoad: (p) => {
      layout?.panes.forEach((other) => other !== p && other.resumePrefetch());
      relink(p);
    },
  };
  layout = new Layout(grid, context, () => syncToolbar());
  shownLayout = layout;

  const chooseTool = (tool: LeftTool) => {
    state.leftTool = tool;
    setLeftTool(group, tool);
    root.querySelectorAll<HTMLButtonElement>('[data-tool]').forEach((b) => b.classList.toggle('active', b.dataset.tool === tool));
  };
  const chooseLayout = (name: LayoutName) => {
    state.layout = name;
    layout!.set(name);
    relink();
    root.querySelectorAll<HTMLButtonElement>('[data-layout]').forEach((b) => b.classList.toggle('active', b.dataset.layout === name));
  };
  const loadIntoActive = async (s: DicomJson, from?: DicomJson) => {
    const p = active();
    if (!p) return;
    const done = p.load(s, from);
    syncToolbar();
    await done;
    syncToolbar();
  };
  let closeTags: (() => void) | null = null;
  const showTags = (focus: boolean) => {
    const p = active();
    const f = p?.currentFrame();
    if (!p || !f || !p.seriesUid) return;
    const seriesUid = p.seriesUid;
    const paneStudy = p.studyUid;
    tagsSop = f.sop;
    const filter = tagsPanel.querySelector<HTMLInputElement>('.tags-search')?.value ?? '';
    closeTags = openTagBrowser(
      tagsPanel,
      `${t('slice')} ${p.imageIndex() + 1} · ${f.sop}${f.frame > 1 ? ` · ${t('frame')} ${f.frame}` : ''}`,
      () => instanceMetadata(paneStudy, seriesUid, f.sop),
      { filter, focus },
    );
  };
  const toggleTags = () => {
    if (closeTags && !tagsPanel.hidden) {
      closeTags();
      closeTags = null;
    } else {
      showTags(true);
    }
    requestAnimationFrame(() => engine?.resize(true, true));
  };
  const toggleHelp = (show = helpPanel.hidden) => {
    helpPanel.hidden = !show;
    if (show) {
      helpPanel.innerHTML = `<button class="dialog-close" aria-label="${t('close')}">✕</button>${helpHtml()}`;
      helpPanel.querySelector('.dialog-close')!.addEventListener('click', () => toggleHelp(false));
    }
  };

  const run = (a: Action) => {
    const p = active();
    switch (a) {
      case 'next': return p?.scrollBy(1);
      case 'prev': return p?.scrollBy(-1);
      case 'pageDown': return p?.scrollBy(10);
      case 'pageUp': return p?.scrollBy(-10);
      case 'first': return p?.scrollTo(0);
      case 'last': return p?.scrollTo(Number.MAX_SAFE_INTEGER);
      case 'windowLevel': case 'zoom': case 'pan': case 'length': case 'angle': case 'ellipse': return chooseTool(a);
      case 'preset0': case 'preset1': case 'preset2': case 'preset3': case 'preset4':
        return p?.applyPreset(PRESET_ORDER[Number(a.slice(-1))]);
      case 'invert': return p?.toggleInvert();
      case 'reset': return p?.reset();
      case 'cine': p?.toggleCine(); return syncToolbar();
      case 'layout': return chooseLayout(LAYOUT_ORDER[(LAYOUT_ORDER.indexOf(state.layout) + 1) % LAYOUT_ORDER.length]);
      case 'nextViewport': return layout!.next();
      case 'sync': return toggleSync();
      case 'tags': return toggleTags();
      case 'help': return toggleHelp();
      case 'close':
        if (!helpPanel.hidden) return toggleHelp(false);
        if (!tagsPanel.hidden) return toggleTags();
        return;
    }
  };

  root.querySelectorAll<HTMLButtonElement>('[data-tool]').forEach((b) =>
    b.addEventListener('click', () => chooseTool(b.dataset.tool as LeftTool)),
  );
  root.querySelectorAll<HTMLButtonElement>('[data-layout]').forEach((b) =>
    b.addEventListener('click', () => chooseLayout(b.dataset.layout as LayoutName)),
  );
  const presetSel = root.querySelector<HTMLSelectElement>('#preset')!;
  presetSel.addEventListener('change', () => {
    if (presetSel.value) active()?.applyPreset(presetSel.value as Preset);
    presetSel.value = '';
    presetSel.blur(); // give the keys back to the viewport
  });
  root.querySelector('#invert')!.addEventListener('click', () => run('invert'));
  root.querySelector('#reset')!.addEventListener('click', () => run('reset'));
  cineButton.addEventListener('click', () => run('cine'));
  fpsInput.addEventListener('change', () => {
    const v = Number(fpsInput.value);
    if (Number.isFinite(v) && v > 0) active()?.setFps(v);
    fpsInput.value = String(active()?.fps ?? v);
    fpsInput.blur();
  });
  syncButton.addEventListener('click', () => run('sync'));
  root.querySelector('#tags-open')!.addEventListener('click', () => run('tags'));
  root.querySelector<HTMLButtonElement>('#download')!.addEventListener('click', (e) =>
    void downloadStudy(studyUid, e.currentTarget as HTMLButtonElement),
  );
  root.querySelector('#help-open')!.addEventListener('click', () => run('help'));
  // Buttons must not keep the focus: Space would press them again instead of playing cine.
  root.querySelectorAll<HTMLButtonElement>('.toolbar button').forEach((b) => b.addEventListener('click', () => b.blur()));

  keyHandler = (e: KeyboardEvent) => {
    const a = actionFor(e);
    if (!a) return;
    e.preventDefault();
    run(a);
  };
  document.addEventListener('keydown', keyHandler);
  resizeObserver = new ResizeObserver(() => engine?.resize(true, true));
  resizeObserver.observe(grid);

  renderSeriesPanel(panel, studyUid, series, (s) => void loadIntoActive(s));
  // The patient's other studies, to compare with: their series load into the active viewport.
  if (opts.priors !== false) {
    const priors = document.createElement('div');
    priors.className = 'priors';
    panel.append(priors);
    void renderPriors(priors, study, (s, from) => void loadIntoActive(s, from));
  }
  chooseTool('windowLevel');
  chooseLayout('1x1');
  const first = active();
  if (first) {
    // Layout.set started loading the first series; follow it to update the toolbar.
    const wait = () => (first.ready || first.error || first.destroyed ? syncToolbar() : setTimeout(wait, 50));
    wait();
  }
}

/**
 * Saves the study as a ZIP with a DICOMDIR (`Accept: application/zip`, the
 * server streams it). Fetched with the login's token, so it goes through a
 * blob rather than a plain link.
 */
async function downloadStudy(studyUid: string, button: HTMLButtonElement): Promise<void> {
  button.disabled = true;
  try {
    const r = await authFetch(`/dicomweb/studies/${encodeURIComponent(studyUid)}?dicomdir=true`, {
      headers: { Accept: 'application/zip' },
    });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = `study-${studyUid}.zip`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    button.title = `${t('downloadFailed')}: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    button.disabled = false;
  }
}

async function showEmrLink(host: HTMLElement, studyUid: string, state: { emr: string }): Promise<void> {
  try {
    const link = await studyEmrLink(studyUid);
    if (link) {
      const id = document.createElement('small');
      id.textContent = link.recordId;
      host.append(emrAnchor(link), id);
    }
    state.emr = link ? 'link' : 'none';
  } catch (e) {
    state.emr = e instanceof EmrUnavailable ? 'unavailable' : 'error';
    console.warn(`EMR link: ${e}`);
  }
}
