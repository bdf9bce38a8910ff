// Viewport layouts of the study view (1×1, 2×1, 2×2) and which pane is
// active: the one that keys, toolbar and series clicks act on.

import { DicomJson, str, T } from './api';
import { Pane, StudyContext } from './viewport';

export const LAYOUTS = { '1x1': [1, 1], '2x1': [2, 1], '2x2': [2, 2] } as const;
export type LayoutName = keyof typeof LAYOUTS;
export const LAYOUT_ORDER: LayoutName[] = ['1x1', '2x1', '2x2'];

export class Layout {
  panes: Pane[] = [];
  name: LayoutName = '1x1';
  private active = 0;
  /** The series (and study) each slot showed, so a pane hidden by a smaller layout comes back with it. */
  private remembered: Array<{ series: DicomJson; study: DicomJson } | null> = [];

  constructor(
    private readonly grid: HTMLElement,
    private readonly ctx: StudyContext,
    private readonly onActive: (pane: Pane) => void,
  ) {}

  activePane(): Pane {
    return this.panes[this.active];
  }

  setActive(index: number): void {
    if (!this.panes[index]) return;
    this.active = index;
    this.panes.forEach((p, i) => p.root.classList.toggle('active', i === index));
    this.onActive(this.panes[index]);
  }

  set(name: LayoutName): void {
    const [cols, rows] = LAYOUTS[name];
    const count = cols * rows;
    this.name = name;
    this.grid.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
    this.grid.style.gridTemplateRows = `repeat(${rows}, 1fr)`;
    this.grid.dataset.layout = name;
    while (this.panes.length > count) {
      const pane = this.panes.pop()!;
      this.remembered[pane.index] = pane.series ? { series: pane.series, study: pane.study } : null;
      pane.destroy();
    }
    const added: Pane[] = [];
    while (this.panes.length < count) {
      const pane = new Pane(this.ctx, this.panes.length);
      pane.root.addEventListener('mousedown', () => this.setActive(pane.index), { capture: true });
      this.grid.append(pane.root);
      this.panes.push(pane);
      added.push(pane);
    }
    // Enable after every pane is in the grid, so each canvas gets its final size.
    for (const pane of added) pane.enable();
    this.ctx.engine.resize(true, true);
    for (const pane of added) {
      const back = this.remembered[pane.index];
      const s = back?.series ?? this.nextUnshown();
      if (s) void pane.load(s, back?.study);
    }
    this.setActive(Math.min(this.active, count - 1));
  }

  /** Destroys every pane (leaving the study view); the rendering engine stays. */
  destroy(): void {
    for (const pane of this.panes.splice(0)) pane.destroy();
    this.remembered = [];
  }

  next(): void {
    this.setActive((this.active + 1) % this.panes.length);
  }

  /** The series asked for first, else the first series no pane shows yet (series are compared side by side). */
  private nextUnshown(): DicomJson | null {
    const shown = new Set(this.panes.map((p) => p.seriesUid));
    const unshown = this.ctx.series.filter((s) => !shown.has(str(s, T.SeriesInstanceUID)));
    return unshown.find((s) => str(s, T.SeriesInstanceUID) === this.ctx.firstSeries) ?? unshown[0] ?? null;
  }
}
