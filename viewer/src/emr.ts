// Links from studies to the hospital EMR record they belong to (server API
// /api/emr-links and /api/studies/{study}/emr-link), and the link element.

import { authFetch } from './auth';
import { t } from './i18n';

export interface EmrLink {
  recordId: string;
  url: string;
  source: 'explicit' | 'template';
}

/** The server has no EMR link API (older server, or the viewer's SPA fallback answered). */
export class EmrUnavailable extends Error {}

function isLink(v: unknown): v is EmrLink {
  const o = v as Partial<EmrLink> | null;
  return !!o && typeof o.recordId === 'string' && typeof o.url === 'string' && safeUrl(o.url) !== null;
}

/** Only http(s) URLs become links: a javascript: URL from the index must not run here. */
function safeUrl(url: string): string | null {
  try {
    const u = new URL(url, location.href);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

async function getJsonOrNull(url: string): Promise<unknown | null> {
  const res = await authFetch(url, { headers: { Accept: 'application/json' } });
  if (res.status === 404) return null; // no link for this study
  const type = res.headers.get('content-type') ?? '';
  if (!res.ok) throw new Error(`${res.status} ${res.statusText}: ${url.replace(location.origin, '')}`);
  if (!type.includes('json')) throw new EmrUnavailable(`${url.replace(location.origin, '')} answered ${type}`);
  return res.json();
}

/** The study's EMR link, or null when it has none. */
export async function studyEmrLink(studyUid: string): Promise<EmrLink | null> {
  const body = await getJsonOrNull(`${location.origin}/api/studies/${encodeURIComponent(studyUid)}/emr-link`);
  if (body === null) return null;
  if (!isLink(body)) throw new Error('malformed EMR link');
  return body;
}

/** EMR links of several studies at once; studies without one are absent. */
export async function studiesEmrLinks(studyUids: string[]): Promise<Map<string, EmrLink>> {
  const out = new Map<string, EmrLink>();
  if (!studyUids.length) return out;
  const p = new URLSearchParams({ studies: studyUids.join(',') });
  const body = await getJsonOrNull(`${location.origin}/api/emr-links?${p}`);
  if (body && typeof body === 'object') {
    for (const [uid, link] of Object.entries(body as Record<string, unknown>)) {
      if (isLink(link)) out.set(uid, link);
    }
  }
  return out;
}

/** An "Open in EMR" anchor (new tab) for a link. */
export function emrAnchor(link: EmrLink, text: string = t('openInEmr')): HTMLAnchorElement {
  const a = document.createElement('a');
  a.className = 'emr-link';
  a.href = safeUrl(link.url) ?? '#';
  a.target = '_blank';
  a.rel = 'noopener noreferrer';
  a.textContent = text;
  a.title = `${t('emrRecord')} ${link.recordId}`;
  a.dataset.recordId = link.recordId;
  return a;
}
