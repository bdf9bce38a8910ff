// cornerstone3D start-up and the interaction tools: one tool group for all
// viewports of the study view, the left-button tool switch, and the
// measurements read back from the annotation state.

import { init as csInit, setUseCPURendering } from '@cornerstonejs/core';
import { init as dicomLoaderInit } from '@cornerstonejs/dicom-image-loader';
import * as cst from '@cornerstonejs/tools';

import { authHeaders, unauthorized } from './auth';

export const TOOLGROUP_ID = 'phim-tools';

/** What the left mouse button does; right = zoom and middle = pan always. */
export type LeftTool = 'windowLevel' | 'zoom' | 'pan' | 'length' | 'angle' | 'ellipse';
export const LEFT_TOOLS: Record<LeftTool, string> = {
  windowLevel: cst.WindowLevelTool.toolName,
  zoom: cst.ZoomTool.toolName,
  pan: cst.PanTool.toolName,
  length: cst.LengthTool.toolName,
  angle: cst.AngleTool.toolName,
  ellipse: cst.EllipticalROITool.toolName,
};

let initialised: Promise<void> | null = null;

/** Frames (imageIds) to ask for decoded by the server (see `viewport.ts`). */
export const decodedByServer = new Set<string>();

/** Frames decoded by the server: native pixels, Explicit VR Little Endian. */
const DECODED_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';

export function initCornerstone(): Promise<void> {
  initialised ??= (async () => {
    csInit();
    const backend = renderBackend();
    if (backend.cpu) setUseCPURendering(true);
    document.documentElement.dataset.render = backend.cpu ? 'cpu' : 'webgl';
    console.info(`phim viewer: ${backend.cpu ? 'CPU' : 'WebGL'} rendering (${backend.why})`);
    dicomLoaderInit({
      maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)),
      // The access token on every frame request ({} when the server needs
      // none); frames the browser would decode wrongly asked for decoded.
      beforeSend: async (_xhr: XMLHttpRequest, imageId: string): Promise<Record<string, string>> => {
        const accept: Record<string, string> = decodedByServer.has(imageId) ? { Accept: DECODED_FRAMES } : {};
        try {
          return { ...(await authHeaders()), ...accept };
        } catch {
          return accept; // signed out: the login page is on its way, and this request gets its 401
        }
      },
      errorInterceptor: (err) => {
        if (err.status === 401) void unauthorized(null);
      },
    });
    cst.init();
    cst.addTool(cst.StackScrollTool);
    for (const name of Object.keys(LEFT_TOOLS) as LeftTool[]) cst.addTool(toolClass(name));
  })();
  return initialised;
}

/**
 * Which renderer draws the stacks. WebGL on a real GPU is cornerstone's fast
 * path; behind a software rasteriser (SwiftShader, llvmpipe: GPU-less VDI
 * reading stations, virtual machines) every WebGL frame costs tens of
 * milliseconds and cornerstone's CPU (canvas 2D) path is several times
 * faster. `?render=cpu|webgl` or localStorage `phim.render` overrides.
 */
function renderBackend(): { cpu: boolean; why: string } {
  const asked = new URLSearchParams(location.search).get('render') ?? localStorage.getItem('phim.render');
  if (asked === 'cpu' || asked === 'webgl') return { cpu: asked === 'cpu', why: `asked for ${asked}` };
  const canvas = document.createElement('canvas');
  const gl = canvas.getContext('webgl2') ?? canvas.getContext('webgl');
  if (!gl) return { cpu: true, why: 'no WebGL' };
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
  gl.getExtension('WEBGL_lose_context')?.loseContext();
  const software = /swiftshader|llvmpipe|softpipe|software/i.test(renderer);
  return { cpu: software, why: `${software ? 'software' : 'GPU'} WebGL: ${renderer}` };
}

function toolClass(t: LeftTool) {
  return {
    windowLevel: cst.WindowLevelTool,
    zoom: cst.ZoomTool,
    pan: cst.PanTool,
    length: cst.LengthTool,
    angle: cst.AngleTool,
    ellipse: cst.EllipticalROITool,
  }[t];
}

export type ToolGroup = NonNullable<ReturnType<typeof cst.ToolGroupManager.createToolGroup>>;

export function createToolGroup(): ToolGroup {
  cst.ToolGroupManager.destroyToolGroup(TOOLGROUP_ID);
  const group = cst.ToolGroupManager.createToolGroup(TOOLGROUP_ID)!;
  group.addTool(cst.StackScrollTool.toolName);
  for (const name of Object.values(LEFT_TOOLS)) group.addTool(name);
  group.setToolActive(cst.StackScrollTool.toolName, { bindings: [{ mouseButton: cst.Enums.MouseBindings.Wheel }] });
  return group;
}

export function destroyToolGroup(): void {
  cst.ToolGroupManager.destroyToolGroup(TOOLGROUP_ID);
  cst.annotation.state.removeAllAnnotations();
}

export function setLeftTool(group: ToolGroup, tool: LeftTool): void {
  const MB = cst.Enums.MouseBindings;
  for (const [key, name] of Object.entries(LEFT_TOOLS)) {
    const bindings = [];
    if (key === tool) bindings.push({ mouseButton: MB.Primary });
    if (key === 'zoom') bindings.push({ mouseButton: MB.Secondary });
    if (key === 'pan') bindings.push({ mouseButton: MB.Auxiliary });
    if (bindings.length) group.setToolActive(name, { bindings });
    else group.setToolPassive(name); // drawn measurements stay visible and editable
  }
}

export interface Measurement {
  tool: 'length' | 'angle' | 'ellipse';
  /** Length, angle, or for an ellipse its mean (in `unit`, HU on CT). */
  value: number;
  unit: string;
  /** Ellipse only: standard deviation (`unit`), area (`areaUnit`), min and max. */
  stdDev?: number;
  area?: number;
  areaUnit?: string;
  min?: number;
  max?: number;
}

type Stats = {
  length?: number;
  angle?: number;
  unit?: string;
  mean?: number;
  stdDev?: number;
  area?: number;
  areaUnit?: string;
  min?: number;
  max?: number;
  modalityUnit?: string;
};
type AnyAnnotation = {
  metadata: { toolName: string };
  data: { cachedStats?: Record<string, Stats> };
};

/**
 * Measurements drawn so far, in drawing order: lengths in the tool's unit,
 * angles in degrees, ellipses as region statistics of the modality values
 * (after the Modality LUT: HU on CT).
 */
export function measurements(): Measurement[] {
  const all = cst.annotation.state.getAllAnnotations() as unknown as AnyAnnotation[];
  const out: Measurement[] = [];
  for (const a of all) {
    for (const s of Object.values(a.data.cachedStats ?? {})) {
      if (a.metadata.toolName === cst.LengthTool.toolName && typeof s.length === 'number') {
        out.push({ tool: 'length', value: s.length, unit: s.unit ?? '' });
      } else if (a.metadata.toolName === cst.AngleTool.toolName && typeof s.angle === 'number') {
        out.push({ tool: 'angle', value: s.angle, unit: '°' });
      } else if (a.metadata.toolName === cst.EllipticalROITool.toolName && typeof s.mean === 'number') {
        const { stdDev, area, areaUnit, min, max } = s;
        out.push({ tool: 'ellipse', value: s.mean, unit: s.modalityUnit ?? '', stdDev, area, areaUnit, min, max });
      }
    }
  }
  return out;
}
