// The study view: series panel, a cornerstone3D stack viewport fed by
// WADO-RS frames (stored transfer syntax), tools, presets and an overlay.

import {
  init as csInit,
  Enums as csEnums,
  RenderingEngine,
  utilities as csUtils,
  type Types,
} from '@cornerstonejs/core';
import { init as dicomLoaderInit, wadors } from '@cornerstonejs/dicom-image-loader';
import * as tools from '@cornerstonejs/tools';

import { DicomJson, frameUrl, getStudy, num, searchSeries, seriesMetadata, str, T } from './api';
import { formatDate, t } from './i18n';

const ENGINE_ID = 'phim-engine';
const VIEWPORT_ID = 'phim-stack';
const TOOLGROUP_ID = 'phim-tools';

/** CT window presets as [width, center] in HU. */
const PRESETS: Record<'brain' | 'lung' | 'bone' | 'abdomen', [number, number]> = {
  brain: [80, 40],
  lung: [1500, -600],
  bone: [2000, 300],
  abdomen: [400, 50],
};

type LeftTool = 'windowLevel' | 'length' | 'zoom' | 'pan';
const LEFT_TOOLS: Record<LeftTool, string> = {
  windowLevel: tools.WindowLevelTool.toolName,
  length: tools.LengthTool.toolName,
  zoom: tools.ZoomTool.toolName,
  pan: tools.PanTool.toolName,
};

let initialised: Promise<void> | null = null;

function initCornerstone(): Promise<void> {
  initialised ??= (async () => {
    csInit();
    dicomLoaderInit({ maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) });
    tools.init();
    for (const tool of [
      tools.StackScrollTool,
      tools.WindowLevelTool,
      tools.ZoomTool,
      tools.PanTool,
      tools.LengthTool,
    ]) {
      tools.addTool(tool);
    }
  })();
  return initialised;
}

interface ViewerState {
  studyUid: string;
  seriesUid: string | null;
  imageIds: string[];
  ready: boolean;
  error: string | null;
  leftTool: LeftTool;
  inverted: boolean;
}

/** Exposed for the end-to-end tests (`window.__viewer`). */
interface ViewerHooks {
  state: ViewerState;
  imageIndex(): number;
  /** Canvas CSS pixel -> image pixel (column, row). */
  canvasToImage(p: [number, number]): [number, number];
  lengths(): Array<{ length: number; unit: string }>;
}

declare global {
  interface Window {
    __viewer?: ViewerHooks;
  }
}

let engine: RenderingEngine | null = null;
let keyHandler: ((e: KeyboardEvent) => void) | null = null;

export function leaveStudy(): void {
  if (keyHandler) document.removeEventListener('keydown', keyHandler);
  keyHandler = null;
  if (engine) {
    tools.ToolGroupManager.destroyToolGroup(TOOLGROUP_ID);
    engine.destroy();
    engine = null;
  }
  delete window.__viewer;
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export async function renderStudy(root: HTMLElement, studyUid: string): Promise<void> {
  const state: ViewerState = {
    studyUid,
    seriesUid: null,
    imageIds: [],
    ready: false,
    error: null,
    leftTool: 'windowLevel',
    inverted: false,
  };
  root.innerHTML = `
    <div class="study">
      <aside class="series-panel" id="series-panel"><div class="msg">${t('loading')}</div></aside>
      <section class="viewer-col">
        <div class="toolbar" id="toolbar">
          ${(Object.keys(LEFT_TOOLS) as LeftTool[])
            .map((k) => `<button data-tool="${k}" id="tool-${k}">${t(k)}</button>`)
            .join('')}
          <select id="preset" aria-label="${t('presets')}">
            <option value="">${t('presets')}…</option>
            ${Object.keys(PRESETS).map((p) => `<option value="${p}">${t(p as keyof typeof PRESETS)}</option>`).join('')}
          </select>
          <button id="invert">${t('invert')}</button>
          <button id="reset">${t('reset')}</button>
          <span class="msg" style="padding:4px 8px">${t('help')}</span>
        </div>
        <div class="vp-wrap">
          <div id="viewport" oncontextmenu="return false"></div>
          <div class="overlay tl" id="ov-tl"></div>
          <div class="overlay tr" id="ov-tr"></div>
          <div class="overlay bl" id="ov-bl"></div>
          <div class="overlay br" id="ov-br"></div>
        </div>
      </section>
    </div>`;
  const element = root.querySelector<HTMLDivElement>('#viewport')!;
  const panel = root.querySelector<HTMLElement>('#series-panel')!;

  window.__viewer = {
    state,
    imageIndex: () => viewport()?.getCurrentImageIdIndex() ?? -1,
    canvasToImage: (p) => {
      const vp = viewport()!;
      const world = vp.canvasToWorld(p);
      const ij = csUtils.worldToImageCoords(vp.getCurrentImageId()!, world);
      if (!ij) throw new Error('point outside the image');
      return [ij[0], ij[1]];
    },
    lengths: () =>
      (tools.annotation.state.getAllAnnotations() as Array<{ metadata: { toolName: string }; data: { cachedStats?: Record<string, { length?: number; unit?: string }> } }>)
        .filter((a) => a.metadata.toolName === tools.LengthTool.toolName)
        .flatMap((a) => Object.values(a.data.cachedStats ?? {}))
        .filter((s) => typeof s.length === 'number')
        .map((s) => ({ length: s.length!, unit: s.unit ?? '' })),
  };

  let study: DicomJson | undefined;
  let series: DicomJson[];
  try {
    await initCornerstone();
    [study, series] = await Promise.all([getStudy(studyUid).then((r) => r[0]), searchSeries(studyUid)]);
  } catch (e) {
    state.error = String(e);
    panel.innerHTML = `<div class="msg err">${t('error')}: ${esc(String(e))}</div>`;
    return;
  }
  series.sort((a, b) => (num(a, T.SeriesNumber) ?? 0) - (num(b, T.SeriesNumber) ?? 0));

  engine = new RenderingEngine(ENGINE_ID);
  engine.enableElement({
    viewportId: VIEWPORT_ID,
    type: csEnums.ViewportType.STACK,
    element,
    defaultOptions: { background: [0, 0, 0] as Types.Point3 },
  });
  const toolGroup = tools.ToolGroupManager.createToolGroup(TOOLGROUP_ID)!;
  for (const name of [
    tools.StackScrollTool.toolName,
    tools.WindowLevelTool.toolName,
    tools.ZoomTool.toolName,
    tools.PanTool.toolName,
    tools.LengthTool.toolName,
  ]) {
    toolGroup.addTool(name);
  }
  toolGroup.addViewport(VIEWPORT_ID, ENGINE_ID);
  const MB = tools.Enums.MouseBindings;
  toolGroup.setToolActive(tools.StackScrollTool.toolName, { bindings: [{ mouseButton: MB.Wheel }] });

  const setLeftTool = (tool: LeftTool) => {
    state.leftTool = tool;
    // Right = zoom and middle = pan always; the left button gets the chosen tool.
    for (const [k, name] of Object.entries(LEFT_TOOLS)) {
      const bindings = [];
      if (k === tool) bindings.push({ mouseButton: MB.Primary });
      if (k === 'zoom') bindings.push({ mouseButton: MB.Secondary });
      if (k === 'pan') bindings.push({ mouseButton: MB.Auxiliary });
      if (bindings.length) toolGroup.setToolActive(name, { bindings });
      else if (k === 'length') toolGroup.setToolEnabled(name); // keep drawn lengths visible
      else toolGroup.setToolPassive(name);
    }
    root.querySelectorAll<HTMLButtonElement>('[data-tool]').forEach((b) =>
      b.classList.toggle('active', b.dataset.tool === tool),
    );
  };
  setLeftTool('windowLevel');
  root.querySelectorAll<HTMLButtonElement>('[data-tool]').forEach((b) =>
    b.addEventListener('click', () => setLeftTool(b.dataset.tool as LeftTool)),
  );

  const presetSel = root.querySelector<HTMLSelectElement>('#preset')!;
  presetSel.addEventListener('change', () => {
    const p = PRESETS[presetSel.value as keyof typeof PRESETS];
    const vp = viewport();
    if (p && vp) {
      vp.setProperties({ voiRange: csUtils.windowLevel.toLowHighRange(p[0], p[1]) });
      vp.render();
    }
    presetSel.value = '';
    presetSel.blur(); // give the arrow keys back to scrolling
  });
  root.querySelector('#invert')!.addEventListener('click', () => {
    const vp = viewport();
    if (!vp) return;
    state.inverted = !state.inverted;
    vp.setProperties({ invert: state.inverted });
    vp.render();
  });
  root.querySelector('#reset')!.addEventListener('click', () => {
    const vp = viewport();
    if (!vp) return;
    state.inverted = false;
    vp.resetProperties();
    vp.resetCamera();
    vp.render();
  });

  keyHandler = (e: KeyboardEvent) => {
    const tag = (e.target as HTMLElement)?.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
    const delta = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[e.key];
    const vp = viewport();
    if (!delta || !vp) return;
    e.preventDefault();
    const n = vp.getImageIds().length;
    const next = Math.max(0, Math.min(n - 1, vp.getCurrentImageIdIndex() + delta));
    void vp.setImageIdIndex(next);
  };
  document.addEventListener('keydown', keyHandler);

  const updateOverlay = () => updateOverlays(root, study!, series, state);
  element.addEventListener(csEnums.Events.STACK_NEW_IMAGE, updateOverlay);
  element.addEventListener(csEnums.Events.VOI_MODIFIED, updateOverlay);

  const showSeries = async (s: DicomJson) => {
    const seriesUid = str(s, T.SeriesInstanceUID);
    state.seriesUid = seriesUid;
    state.ready = false;
    panel.querySelectorAll<HTMLElement>('.series-item').forEach((el) =>
      el.classList.toggle('active', el.dataset.series === seriesUid),
    );
    try {
      const instances = await seriesMetadata(studyUid, seriesUid);
      state.imageIds = registerImageIds(studyUid, seriesUid, instances);
      if (!state.imageIds.length) throw new Error(t('noImages'));
      const vp = viewport()!;
      await vp.setStack(state.imageIds, 0);
      vp.render();
      state.ready = true;
      updateOverlay();
    } catch (e) {
      state.error = String(e);
      root.querySelector('#ov-tl')!.textContent = `${t('error')}: ${e}`;
    }
  };

  panel.innerHTML = series
    .map(
      (s) => `<div class="series-item" data-series="${esc(str(s, T.SeriesInstanceUID))}">
        <b>${esc(str(s, T.Modality))} ${esc(str(s, T.SeriesNumber))}</b> ${esc(str(s, T.SeriesDescription))}
        <small>${esc(str(s, T.NumberOfSeriesRelatedInstances))} ${t('images')}</small></div>`,
    )
    .join('');
  panel.querySelectorAll<HTMLElement>('.series-item').forEach((el, i) =>
    el.addEventListener('click', () => void showSeries(series[i])),
  );
  if (series.length) await showSeries(series[0]);
}

function viewport(): Types.IStackViewport | undefined {
  return engine?.getViewport(VIEWPORT_ID) as Types.IStackViewport | undefined;
}

/** One wadors: imageId per frame, metadata registered, sorted in space. */
function registerImageIds(studyUid: string, seriesUid: string, instances: DicomJson[]): string[] {
  const frames: Array<{ id: string; z: number; n: number; f: number }> = [];
  for (const inst of instances) {
    const sop = str(inst, T.SOPInstanceUID);
    const count = num(inst, T.NumberOfFrames) ?? 1;
    const z = num(inst, T.ImagePositionPatient, 2) ?? 0;
    const n = num(inst, T.InstanceNumber) ?? 0;
    for (let f = 1; f <= count; f++) {
      const id = `wadors:${frameUrl(studyUid, seriesUid, sop, f)}`;
      wadors.metaDataManager.add(id, inst as never);
      frames.push({ id, z, n, f });
    }
  }
  frames.sort((a, b) => a.z - b.z || a.n - b.n || a.f - b.f);
  return frames.map((x) => x.id);
}

function updateOverlays(root: HTMLElement, study: DicomJson, allSeries: DicomJson[], state: ViewerState): void {
  const vp = viewport();
  if (!vp || !state.ready) return;
  const s = allSeries.find((x) => str(x, T.SeriesInstanceUID) === state.seriesUid);
  const idx = vp.getCurrentImageIdIndex();
  const voi = vp.getProperties().voiRange;
  const set = (id: string, text: string) => (root.querySelector(`#${id}`)!.textContent = text);
  set('ov-tl', `${str(study, T.PatientName)}\n${str(study, T.PatientID)}`);
  set(
    'ov-tr',
    `${str(study, T.StudyDescription)}\n${formatDate(str(study, T.StudyDate))}\n${str(study, T.AccessionNumber)}`,
  );
  set('ov-bl', s ? `${t('series')} ${str(s, T.SeriesNumber)}: ${str(s, T.SeriesDescription)}` : '');
  let wl = '';
  if (voi) {
    const { windowWidth, windowCenter } = csUtils.windowLevel.toWindowLevel(voi.lower, voi.upper);
    wl = `\nW ${Math.round(windowWidth)} / L ${Math.round(windowCenter)}`;
  }
  set('ov-br', `${t('slice')} ${idx + 1}/${state.imageIds.length}${wl}`);
}
