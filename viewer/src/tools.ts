// cornerstone3D start-up and the interaction tools: one tool group for all
// viewports of the study view, the left-button tool switch, and the
// measurements read back from the annotation state.

import { init as csInit } from '@cornerstonejs/core';
import { init as dicomLoaderInit } from '@cornerstonejs/dicom-image-loader';
import * as cst from '@cornerstonejs/tools';

export const TOOLGROUP_ID = 'phim-tools';

/** What the left mouse button does; right = zoom and middle = pan always. */
export type LeftTool = 'windowLevel' | 'zoom' | 'pan' | 'length' | 'angle';
export const LEFT_TOOLS: Record<LeftTool, string> = {
  windowLevel: cst.WindowLevelTool.toolName,
  zoom: cst.ZoomTool.toolName,
  pan: cst.PanTool.toolName,
  length: cst.LengthTool.toolName,
  angle: cst.AngleTool.toolName,
};

let initialised: Promise<void> | null = null;

export function initCornerstone(): Promise<void> {
  initialised ??= (async () => {
    csInit();
    dicomLoaderInit({ maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) });
    cst.init();
    cst.addTool(cst.StackScrollTool);
    for (const name of Object.keys(LEFT_TOOLS) as LeftTool[]) cst.addTool(toolClass(name));
  })();
  return initialised;
}

function toolClass(t: LeftTool) {
  return { windowLevel: cst.WindowLevelTool, zoom: cst.ZoomTool, pan: cst.PanTool, length: cst.LengthTool, angle: cst.AngleTool }[t];
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
  tool: 'length' | 'angle';
  value: number;
  unit: string;
}

type AnyAnnotation = {
  metadata: { toolName: string };
  data: { cachedStats?: Record<string, { length?: number; angle?: number; unit?: string }> };
};

/** Measurements drawn so far, in drawing order (lengths in the tool's unit, angles in degrees). */
export function measurements(): Measurement[] {
  const all = cst.annotation.state.getAllAnnotations() as unknown as AnyAnnotation[];
  const out: Measurement[] = [];
  for (const a of all) {
    for (const s of Object.values(a.data.cachedStats ?? {})) {
      if (a.metadata.toolName === cst.LengthTool.toolName && typeof s.length === 'number') {
        out.push({ tool: 'length', value: s.length, unit: s.unit ?? '' });
      } else if (a.metadata.toolName === cst.AngleTool.toolName && typeof s.angle === 'number') {
        out.push({ tool: 'angle', value: s.angle, unit: '°' });
      }
    }
  }
  return out;
}
