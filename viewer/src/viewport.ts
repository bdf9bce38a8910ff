// One viewport of the study view ("pane"): a cornerstone3D stack viewport
// fed by WADO-RS frames in the stored transfer syntax, the whole stack
// prefetched in the background, with its overlay, scrollbar, window presets
// and cine.

import {
  cache,
  Enums as csEnums,
  RenderingEngine,
  utilities as csUtils,
  type Types,
} from '@cornerstonejs/core';
import { wadors } from '@cornerstonejs/dicom-image-loader';
import * as cst from '@cornerstonejs/tools';

import { DicomJson, frameUrl, num, seriesMetadata, str, T } from './api';
import { formatDate, formatTime, t } from './i18n';
import { decodedByServer, TOOLGROUP_ID } from './tools';

/** Window presets as [width, center] (CT, in HU); `default` is the image's stored WC/WW. */
export const PRESETS = {
  brain: [80, 40],
  lung: [1500, -600],
  bone: [1500, 300],
  abdomen: [400, 40],
} as const satisfies Record<string, readonly [number, number]>;
export type Preset = keyof typeof PRESETS | 'default';
export const PRESET_ORDER: Preset[] = ['default', 'brain', 'lung', 'bone', 'abdomen'];

interface Frame {
  id: string;
  sop: string;
  frame: number;
  meta: DicomJson;
}

export interface StudyContext {
  engine: RenderingEngine;
  studyUid: string;
  study: DicomJson;
  series: DicomJson[];
  /** The series the first free pane shows (`?series=`), when it is one of `series`. */
  firstSeries?: string;
  /** A pane shows another image (scroll, cine, new series). */
  onImage?: (pane: Pane) => void;
  /** A pane finished loading a series. */
  afterLoad?: (pane: Pane) => void;
}

export class Pane {
  readonly viewportId: string;
  readonly root: HTMLElement;
  private readonly element: HTMLDivElement;
  private readonly slider: HTMLInputElement;
  seriesUid: string | null = null;
  /** The series shown and its study: the one opened, or a prior of the same patient. */
  series: DicomJson | null = null;
  study: DicomJson;
  frames: Frame[] = [];
  ready = false;
  error: string | null = null;
  inverted = false;
  playing = false;
  fps = 10;
  /** Set by destroy(): the pane's viewport is gone, and late callbacks for it do nothing. */
  destroyed = false;
  private loadToken = 0;

  constructor(
    private readonly ctx: StudyContext,
    readonly index: number,
  ) {
    this.study = ctx.study;
    this.viewportId = `phim-vp-${index}`;
    this.root = document.createElement('div');
    this.root.className = 'pane';
    this.root.dataset.pane = String(index);
    this.root.innerHTML = `
      <div class="vp" oncontextmenu="return false"></div>
      <div class="overlay tl"></div><div class="overlay tr"></div>
      <div class="overlay bl"></div><div class="overlay br"></div>
      <div class="pane-empty msg">${t('emptyViewport')}</div>
      <input class="pane-scroll" type="range" min="0" max="0" value="0" step="1" aria-label="${t('scrollbar')}" hidden>`;
    this.element = this.root.querySelector<HTMLDivElement>('.vp')!;
    this.slider = this.root.querySelector<HTMLInputElement>('.pane-scroll')!;
    this.slider.addEventListener('input', () => this.scrollTo(Number(this.slider.value)));
    // The slider must not keep the keyboard focus: the arrow keys scroll the active pane.
    this.slider.addEventListener('change', () => this.slider.blur());
  }

  /** Called once the pane's element is in the DOM with its final size. */
  enable(): void {
    this.ctx.engine.enableElement({
      viewportId: this.viewportId,
      type: csEnums.ViewportType.STACK,
      element: this.element,
      defaultOptions: { background: [0, 0, 0] as Types.Point3 },
    });
    cst.ToolGroupManager.getToolGroup(TOOLGROUP_ID)?.addViewport(this.viewportId, this.ctx.engine.id);
    const update = () => this.updateOverlay();
    this.element.addEventListener(csEnums.Events.STACK_NEW_IMAGE, () => {
      // An image request still on the wire when the pane went lands on its old viewport.
      if (this.destroyed) return;
      this.updateOverlay();
      this.ctx.onImage?.(this);
    });
    this.element.addEventListener(csEnums.Events.VOI_MODIFIED, update);
    this.element.addEventListener(csEnums.Events.CAMERA_MODIFIED, update);
  }

  /**
   * Stops the pane's cine and prefetch and disables its viewport. The
   * rendering engine must outlive this: cornerstone cannot cancel an image
   * request already sent, and when it lands it renders through the engine
   * (a no-op for a disabled viewport, a TypeError once the engine is destroyed).
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.ready = false;
    this.loadToken++; // a load in progress stops at its next step
    this.stopCine();
    cst.utilities.stackPrefetch.disable(this.element);
    cst.ToolGroupManager.getToolGroup(TOOLGROUP_ID)?.removeViewports(this.ctx.engine.id, this.viewportId);
    this.ctx.engine.disableElement(this.viewportId);
    this.root.remove();
  }

  viewport(): Types.IStackViewport | undefined {
    return this.ctx.engine.getViewport(this.viewportId) as Types.IStackViewport | undefined;
  }

  get canvas(): HTMLCanvasElement | null {
    return this.element.querySelector('canvas');
  }

  get studyUid(): string {
    return str(this.study, T.StudyInstanceUID) || this.ctx.studyUid;
  }

  /** Whether the pane shows a prior study rather than the one opened. */
  get isPrior(): boolean {
    return this.studyUid !== this.ctx.studyUid;
  }

  /**
   * Shows a series of the study opened, or of `study` (a prior):
   * metadata, one imageId per frame, first image, then the rest in the background.
   */
  async load(series: DicomJson, study: DicomJson = this.ctx.study): Promise<void> {
    const token = ++this.loadToken;
    const seriesUid = str(series, T.SeriesInstanceUID);
    this.stopCine();
    this.seriesUid = seriesUid;
    this.series = series;
    this.study = study;
    this.root.classList.toggle('prior', this.isPrior);
    this.ready = false;
    this.error = null;
    this.root.classList.add('loading');
    try {
      const instances = await seriesMetadata(this.studyUid, seriesUid);
      if (token !== this.loadToken) return;
      this.frames = registerFrames(this.studyUid, seriesUid, instances);
      if (!this.frames.length) throw new Error(t('noImages'));
      const vp = this.viewport()!;
      cst.utilities.stackPrefetch.disable(this.element);
      await vp.setStack(
        this.frames.map((f) => f.id),
        0,
      );
      if (token !== this.loadToken) return;
      this.inverted = false;
      vp.render();
      // The whole stack, nearest images first, in cornerstone's prefetch queue.
      cst.utilities.stackPrefetch.enable(this.element);
      this.fps = defaultFps(instances[0]);
      this.slider.max = String(this.frames.length - 1);
      this.slider.value = '0';
      this.slider.hidden = this.frames.length < 2;
      this.ready = true;
      this.root.classList.add('has-image');
      this.updateOverlay();
      this.ctx.afterLoad?.(this);
    } catch (e) {
      if (token !== this.loadToken) return;
      this.error = String(e);
      this.root.querySelector('.overlay.tl')!.textContent = `${t('error')}: ${e}`;
    } finally {
      if (token === this.loadToken) this.root.classList.remove('loading');
    }
  }

  /**
   * Queues the not-yet-cached rest of the stack again. Loading a series into
   * another pane clears cornerstone's (global) prefetch queue.
   */
  resumePrefetch(): void {
    if (this.ready && this.cachedCount() < this.frames.length) cst.utilities.stackPrefetch.enable(this.element);
  }

  imageIndex(): number {
    return this.ready ? (this.viewport()?.getCurrentImageIdIndex() ?? -1) : -1;
  }

  /** Frames of the current stack already decoded and cached. */
  cachedCount(): number {
    return this.frames.filter((f) => cache.isLoaded(f.id)).length;
  }

  currentFrame(): Frame | undefined {
    return this.frames[this.imageIndex()];
  }

  scrollTo(i: number): void {
    const vp = this.viewport();
    if (!vp || !this.ready) return;
    const n = this.frames.length;
    void vp.setImageIdIndex(Math.max(0, Math.min(n - 1, i)));
  }

  scrollBy(delta: number): void {
    this.scrollTo(this.imageIndex() + delta);
  }

  applyPreset(p: Preset): void {
    const vp = this.viewport();
    if (!vp || !this.ready) return;
    if (p === 'default') {
      const meta = this.currentFrame()?.meta;
      const c = meta && num(meta, T.WindowCenter);
      const w = meta && num(meta, T.WindowWidth);
      if (c !== undefined && w !== undefined && w > 0) {
        vp.setProperties({ voiRange: csUtils.windowLevel.toLowHighRange(w, c) });
      } else {
        vp.resetProperties(); // no stored window: cornerstone's from the pixel range
        vp.setProperties({ invert: this.inverted });
      }
    } else {
      const [w, c] = PRESETS[p];
      vp.setProperties({ voiRange: csUtils.windowLevel.toLowHighRange(w, c) });
    }
    vp.render();
    this.updateOverlay();
  }

  toggleInvert(): void {
    const vp = this.viewport();
    if (!vp || !this.ready) return;
    this.inverted = !this.inverted;
    vp.setProperties({ invert: this.inverted });
    vp.render();
  }

  reset(): void {
    const vp = this.viewport();
    if (!vp || !this.ready) return;
    this.inverted = false;
    vp.resetProperties();
    vp.resetCamera();
    vp.render();
    this.updateOverlay();
  }

  toggleCine(): void {
    if (this.playing) this.stopCine();
    else this.playCine();
  }

  playCine(): void {
    if (!this.ready || this.frames.length < 2) return;
    cst.utilities.cine.playClip(this.element, { framesPerSecond: this.fps, loop: true });
    this.playing = true;
    this.root.classList.add('playing');
  }

  stopCine(): void {
    if (!this.playing) return;
    cst.utilities.cine.stopClip(this.element);
    this.playing = false;
    this.root.classList.remove('playing');
  }

  setFps(fps: number): void {
    this.fps = Math.max(1, Math.min(120, Math.round(fps)));
    if (this.playing) {
      this.stopCine();
      this.playCine();
    }
  }

  updateOverlay(): void {
    if (this.destroyed) return;
    const vp = this.viewport();
    if (!vp || !this.ready) return;
    const { study } = this;
    const s = this.series;
    const idx = vp.getCurrentImageIdIndex();
    const f = this.frames[idx];
    this.slider.value = String(idx);
    const set = (corner: string, lines: string[]) =>
      (this.root.querySelector(`.overlay.${corner}`)!.textContent = lines.filter(Boolean).join('\n'));
    const sexAge = [formatDate(str(study, T.PatientBirthDate)), str(study, T.PatientSex)].filter(Boolean).join(' · ');
    set('tl', [str(study, T.PatientName), str(study, T.PatientID), sexAge]);
    set('tr', [
      this.isPrior ? relativeLabel(str(study, T.StudyDate), str(this.ctx.study, T.StudyDate)) : '',
      str(study, T.StudyDescription),
      `${formatDate(str(study, T.StudyDate))} ${formatTime(str(study, T.StudyTime))}`.trim(),
      str(study, T.AccessionNumber),
    ]);
    const thickness = f ? num(f.meta, T.SliceThickness) : undefined;
    const location = f ? num(f.meta, T.SliceLocation) ?? num(f.meta, T.ImagePositionPatient, 2) : undefined;
    set('bl', [
      s ? `${t('series')} ${str(s, T.SeriesNumber)}: ${str(s, T.SeriesDescription)} (${str(s, T.Modality)})` : '',
      [thickness !== undefined ? `${thickness} mm` : '', location !== undefined ? `z ${location.toFixed(1)} mm` : ''].filter(Boolean).join(' · '),
    ]);
    let wl = '';
    const voi = vp.getProperties().voiRange;
    if (voi) {
      const { windowWidth, windowCenter } = csUtils.windowLevel.toWindowLevel(voi.lower, voi.upper);
      wl = `W ${Math.round(windowWidth)} / L ${Math.round(windowCenter)}`;
    }
    const frameNo = f && f.frame > 1 ? ` (${t('frame')} ${f.frame})` : '';
    set('br', [`${t('slice')} ${idx + 1}/${this.frames.length}${frameNo}`, wl, `${t('zoom')} ${magnification(vp).toFixed(2)}×`]);
  }
}

/**
 * Screen (CSS) pixels per image pixel along a row. cornerstone's getZoom()
 * is relative to the fitted size on WebGL but to the image's pixels on the
 * CPU path; this reads the same on both.
 */
function magnification(vp: Types.IStackViewport): number {
  const id = vp.getCurrentImageId();
  const a = id && csUtils.imageToWorldCoords(id, [0, 0]);
  const b = id && csUtils.imageToWorldCoords(id, [1, 0]);
  if (!a || !b) return vp.getZoom();
  const [ca, cb] = [vp.worldToCanvas(a), vp.worldToCanvas(b)];
  return Math.hypot(cb[0] - ca[0], cb[1] - ca[1]);
}

/** How another study of the patient is marked in the overlay: earlier or later than the one opened. */
function relativeLabel(date: string, opened: string): string {
  if (date && opened && date < opened) return t('prior');
  if (date && opened && date > opened) return t('later');
  return t('otherStudy');
}

/** JPEG Baseline and Extended (lossy) transfer syntaxes. */
const JPEG_LOSSY = new Set(['1.2.840.10008.1.2.4.50', '1.2.840.10008.1.2.4.51']);

/**
 * Colour JPEG labelled RGB (PS3.5 8.2.1: compressed without a colour
 * transform). The browser's libjpeg takes a three-component JPEG without an
 * Adobe marker for YCbCr and converts it, so these frames are asked for
 * decoded by the server, which reads the markers as pydicom does. The stored
 * syntax comes from Available Transfer Syntax UID in the metadata.
 */
function needsServerDecode(inst: DicomJson): boolean {
  return (
    JPEG_LOSSY.has(str(inst, T.AvailableTransferSyntaxUID)) &&
    num(inst, T.SamplesPerPixel) === 3 &&
    str(inst, T.PhotometricInterpretation) === 'RGB'
  );
}

/** One wadors: imageId per frame, metadata registered, sorted in space. */
function registerFrames(studyUid: string, seriesUid: string, instances: DicomJson[]): Frame[] {
  const frames: Array<Frame & { z: number; n: number }> = [];
  for (const inst of instances) {
    // Modality is Type 1 (PS3.3 C.7.3.1), yet some secondary captures lack it,
    // and cornerstone's metadata provider then throws on every render. The
    // copy cornerstone reads says "OT" (other); the stored instance is untouched.
    if (!str(inst, T.Modality)) inst[T.Modality] = { vr: 'CS', Value: ['OT'] };
    const sop = str(inst, T.SOPInstanceUID);
    const count = num(inst, T.NumberOfFrames) ?? 1;
    const z = num(inst, T.ImagePositionPatient, 2) ?? 0;
    const n = num(inst, T.InstanceNumber) ?? 0;
    const onServer = needsServerDecode(inst);
    for (let f = 1; f <= count; f++) {
      const id = `wadors:${frameUrl(studyUid, seriesUid, sop, f)}`;
      wadors.metaDataManager.add(id, inst as never);
      if (onServer) decodedByServer.add(id);
      frames.push({ id, sop, frame: f, meta: inst, z, n });
    }
  }
  frames.sort((a, b) => a.z - b.z || a.n - b.n || a.frame - b.frame);
  return frames;
}

/** Cine speed from the instance (Recommended Display Frame Rate, Cine Rate, Frame Time), else 10 fps. */
function defaultFps(inst: DicomJson | undefined): number {
  if (!inst) return 10;
  const rate = num(inst, T.RecommendedDisplayFrameRate) ?? num(inst, T.CineRate);
  if (rate && rate > 0) return rate;
  const frameTime = num(inst, T.FrameTime);
  if (frameTime && frameTime > 0) return Math.round(1000 / frameTime);
  return 10;
}
