// Linked scrolling: when one pane shows another slice, the other linked
// panes go to their slice nearest the same place in the patient.
//
// Slices are compared by their distance along the reference pane's plane
// normal (Image Position and Orientation (Patient), PS3.3 C.7.6.2.1.1).
// Panes in the same Frame of Reference (PS3.3 C.7.4.1) match by position
// as they are; for panes in another one (a prior study, another session)
// the offset between them is taken when they are linked, the way the
// radiologist has lined them up. Panes without that geometry (CR, US) or
// not parallel to the reference are left alone.

import { DicomJson, num, str, T } from './api';
import type { Pane } from './viewport';

type Vec = [number, number, number];

/** The normal of a frame's plane, or undefined without orientation. */
function normalOf(meta: DicomJson): Vec | undefined {
  const o = [0, 1, 2, 3, 4, 5].map((i) => num(meta, T.ImageOrientationPatient, i));
  if (o.some((v) => v === undefined)) return undefined;
  const [r0, r1, r2, c0, c1, c2] = o as number[];
  const n: Vec = [r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0];
  const len = Math.hypot(...n);
  return len > 0.5 ? [n[0] / len, n[1] / len, n[2] / len] : undefined;
}

function positionOf(meta: DicomJson): Vec | undefined {
  const p = [0, 1, 2].map((i) => num(meta, T.ImagePositionPatient, i));
  return p.some((v) => v === undefined) ? undefined : (p as Vec);
}

const dot = (a: Vec, b: Vec) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];

interface Linked {
  /** Each frame's distance along the reference normal (mm), undefined without a position. */
  z: Array<number | undefined>;
  /** Subtracted from this pane's z to bring it into the reference pane's space. */
  offset: number;
}

export class SliceSync {
  private linked = new Map<Pane, Linked>();
  /** Slices this module asked panes to show: their STACK_NEW_IMAGE is an echo, not a scroll. */
  private commanded = new Map<Pane, number>();
  on = false;

  /** Links `panes` as they stand now, `reference` first; the others follow it at once. */
  link(panes: Pane[], reference: Pane): void {
    this.on = true;
    this.linked.clear();
    this.commanded.clear();
    const refMeta = reference.currentFrame()?.meta;
    const normal = refMeta && normalOf(refMeta);
    if (!refMeta || !normal) return;
    const zOf = (meta: DicomJson) => {
      const p = positionOf(meta);
      return p && dot(p, normal);
    };
    const refFor = str(refMeta, T.FrameOfReferenceUID);
    const refZ = zOf(refMeta);
    for (const pane of panes) {
      const meta = pane.currentFrame()?.meta;
      const n = meta && normalOf(meta);
      if (!pane.ready || !meta || !n || Math.abs(dot(n, normal)) < 0.99) continue;
      const z = pane.frames.map((f) => zOf(f.meta));
      const here = zOf(meta);
      const sameSpace = refFor ? str(meta, T.FrameOfReferenceUID) === refFor : pane.seriesUid === reference.seriesUid;
      const offset = sameSpace || here === undefined || refZ === undefined ? 0 : here - refZ;
      this.linked.set(pane, { z, offset });
    }
    this.follow(reference);
  }

  unlink(): void {
    this.on = false;
    this.linked.clear();
    this.commanded.clear();
  }

  /** `source` shows another slice: move the other linked panes. */
  follow(source: Pane): void {
    if (!this.on) return;
    const index = source.imageIndex();
    if (this.commanded.get(source) === index) {
      this.commanded.delete(source);
      return;
    }
    const from = this.linked.get(source);
    const z = from?.z[index];
    if (!from || z === undefined) return;
    const target = z - from.offset;
    for (const [pane, to] of this.linked) {
      if (pane === source || !pane.ready) continue;
      let best = -1;
      let bestDistance = Infinity;
      to.z.forEach((v, i) => {
        const d = v === undefined ? Infinity : Math.abs(v - to.offset - target);
        if (d < bestDistance) [best, bestDistance] = [i, d];
      });
      if (best >= 0 && best !== pane.imageIndex()) {
        this.commanded.set(pane, best);
        pane.scrollTo(best);
      }
    }
  }
}
