// The study list: a search form over QIDO-RS /studies, paged with
// limit/offset, sortable columns, and each study's EMR link.
//
// The search lives in the URL (`/?patientName=…&modality=CT&page=2`), so a
// reload or a shared link runs it again; the IHE IID parameters
// `/?patientID=X`, `/?accessionNumber=X` and `/?studyUID=a,b` pre-fill it.

import { DicomJson, searchStudies, str, StudyQuery, T } from './api';
import { EmrUnavailable, emrAnchor, studiesEmrLinks } from './emr';
import { formatDate, formatTime, lang, t } from './i18n';

const PAGE = 25;
const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'US', 'XA', 'MG', 'NM', 'PT', 'OT'];

/** URL parameter <-> query field. The IID names (patientID, accessionNumber, studyUID) are the IHE ones. */
const URL_FIELDS = {
  patientName: 'patientName',
  patientID: 'patientId',
  accessionNumber: 'accession',
  from: 'dateFrom',
  to: 'dateTo',
  modality: 'modality',
} as const;

type SortKey = 'name' | 'id' | 'date' | 'modalities' | 'description' | 'accession' | 'images';
const COLUMNS: Array<{ key: SortKey; label: () => string; value: (s: DicomJson) => string | number }> = [
  { key: 'name', label: () => t('patientName'), value: (s) => str(s, T.PatientName) },
  { key: 'id', label: () => t('patientId'), value: (s) => str(s, T.PatientID) },
  { key: 'date', label: () => t('studyDate'), value: (s) => `${str(s, T.StudyDate)}${str(s, T.StudyTime)}` },
  { key: 'modalities', label: () => t('modalities'), value: (s) => (s[T.ModalitiesInStudy]?.Value ?? []).join(', ') },
  { key: 'description', label: () => t('description'), value: (s) => str(s, T.StudyDescription) },
  { key: 'accession', label: () => t('accession'), value: (s) => str(s, T.AccessionNumber) },
  { key: 'images', label: () => t('instances'), value: (s) => Number(str(s, T.NumberOfStudyRelatedInstances)) || 0 },
];

/** The server answers newest first; a header click sorts the page shown. */
let sort: { key: SortKey; dir: 1 | -1 } | null = null;
let inflight: AbortController | null = null;

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The query described by the current URL. */
function queryFromUrl(): StudyQuery {
  const p = new URLSearchParams(location.search);
  const q: StudyQuery = { limit: PAGE, offset: 0 };
  for (const [param, field] of Object.entries(URL_FIELDS)) {
    const v = p.get(param)?.trim();
    if (v) q[field] = v;
  }
  const uids = p
    .getAll('studyUID') // a comma-separated list, or the parameter repeated
    .flatMap((v) => v.split(','))
    .map((u) => u.trim())
    .filter(Boolean);
  if (uids.length) q.studyUids = uids;
  const page = Number(p.get('page') ?? '1');
  if (Number.isInteger(page) && page > 1) q.offset = (page - 1) * PAGE;
  return q;
}

function urlFromQuery(q: StudyQuery): string {
  const p = new URLSearchParams();
  for (const [param, field] of Object.entries(URL_FIELDS)) {
    const v = q[field];
    if (v) p.set(param, v);
  }
  if (q.studyUids?.length) p.set('studyUID', q.studyUids.join(','));
  if (q.offset) p.set('page', String(q.offset / PAGE + 1));
  const s = p.toString();
  return s ? `/?${s}` : '/';
}

export function renderList(root: HTMLElement, navigate: (path: string) => void): void {
  const q = queryFromUrl();
  root.innerHTML = `
    <form class="search" id="search-form">
      <label>${t('patientName')}<input id="q-name" autocomplete="off" value="${esc(q.patientName ?? '')}"></label>
      <label>${t('patientId')}<input id="q-id" autocomplete="off" value="${esc(q.patientId ?? '')}"></label>
      <label>${t('accession')}<input id="q-acc" autocomplete="off" value="${esc(q.accession ?? '')}"></label>
      <label>${t('dateFrom')}<input id="q-from" type="date" value="${esc(q.dateFrom ?? '')}"></label>
      <label>${t('dateTo')}<input id="q-to" type="date" value="${esc(q.dateTo ?? '')}"></label>
      <label>${t('modality')}<select id="q-mod"><option value="">${t('any')}</option>${MODALITIES.map(
        (m) => `<option${m === q.modality ? ' selected' : ''}>${m}</option>`,
      ).join('')}</select></label>
      ${
        q.studyUids?.length
          ? `<span class="uid-filter" id="q-uids" title="${esc(q.studyUids.join('\n'))}">${t('studyUidFilter')}: ${q.studyUids.length} UID
               <button type="button" id="q-uids-clear" aria-label="${t('clear')}">✕</button></span>`
          : ''
      }
      <button id="q-go" type="submit">${t('search')}</button>
      <button id="q-clear" type="button">${t('clear')}</button>
    </form>
    <div id="results"></div>`;
  const val = (id: string) => root.querySelector<HTMLInputElement | HTMLSelectElement>(id)!.value.trim();
  const run = (next: StudyQuery) => {
    history.replaceState(null, '', urlFromQuery(next));
    void load(root, navigate, next);
  };
  const fromForm = (): StudyQuery => ({
    patientName: val('#q-name'),
    patientId: val('#q-id'),
    accession: val('#q-acc'),
    dateFrom: val('#q-from'),
    dateTo: val('#q-to'),
    modality: val('#q-mod'),
    studyUids: queryFromUrl().studyUids,
    limit: PAGE,
    offset: 0,
  });
  let typingTimer = 0;
  root.querySelector('#search-form')!.addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(typingTimer);
    run(fromForm());
  });
  // Search as you type (name, ID, accession) once typing pauses; the same
  // search is not sent twice.
  root.querySelectorAll('#q-name, #q-id, #q-acc').forEach((el) =>
    el.addEventListener('input', () => {
      clearTimeout(typingTimer);
      typingTimer = window.setTimeout(() => {
        const next = fromForm();
        if (urlFromQuery(next) !== location.pathname + location.search) run(next);
      }, 400);
    }),
  );
  root.querySelectorAll('#q-from, #q-to, #q-mod').forEach((el) => el.addEventListener('change', () => run(fromForm())));
  root.querySelector('#q-clear')!.addEventListener('click', () => {
    history.replaceState(null, '', '/');
    sort = null;
    renderList(root, navigate);
  });
  root.querySelector('#q-uids-clear')?.addEventListener('click', () => {
    run({ ...queryFromUrl(), studyUids: undefined, offset: 0 });
    root.querySelector('#q-uids')?.remove();
  });
  void load(root, navigate, q);
}

async function load(root: HTMLElement, navigate: (path: string) => void, query: StudyQuery): Promise<void> {
  const out = root.querySelector<HTMLElement>('#results')!;
  inflight?.abort();
  const ctl = new AbortController();
  inflight = ctl;
  out.dataset.state = 'loading';
  // A new page replaces the old one in place; only an empty panel says "loading".
  if (!out.querySelector('table')) out.innerHTML = `<div class="msg">${t('loading')}</div>`;
  let rows: DicomJson[];
  try {
    // One row more than a page tells whether there is a next page.
    rows = await searchStudies({ ...query, limit: PAGE + 1 }, ctl.signal);
  } catch (e) {
    if (ctl.signal.aborted) return;
    out.innerHTML = `<div class="msg err">${t('error')}: ${esc(e instanceof Error ? e.message : String(e))}</div>`;
    out.dataset.state = 'error';
    return;
  }
  if (ctl.signal.aborted) return;
  const more = rows.length > PAGE;
  rows = rows.slice(0, PAGE);
  if (sort) {
    const col = COLUMNS.find((c) => c.key === sort!.key)!;
    const collator = new Intl.Collator(lang(), { numeric: true, sensitivity: 'base' });
    const { dir } = sort;
    rows = [...rows].sort((a, b) => {
      const x = col.value(a), y = col.value(b);
      return dir * (typeof x === 'number' && typeof y === 'number' ? x - y : collator.compare(String(x), String(y)));
    });
  }
  const page = Math.floor(query.offset / PAGE) + 1;
  const head = COLUMNS.map((c) => {
    const mark = sort?.key === c.key ? (sort.dir === 1 ? ' ▲' : ' ▼') : '';
    const aria = sort?.key === c.key ? (sort.dir === 1 ? 'ascending' : 'descending') : 'none';
    return `<th data-sort="${c.key}" aria-sort="${aria}">${c.label()}${mark}</th>`;
  }).join('');
  const body = rows
    .map(
      (s) => `<tr data-study="${esc(str(s, T.StudyInstanceUID))}">
        <td class="c-name">${esc(str(s, T.PatientName))}</td>
        <td class="c-id">${esc(str(s, T.PatientID))}</td>
        <td class="c-date">${esc(formatDate(str(s, T.StudyDate)))} <small>${esc(formatTime(str(s, T.StudyTime)))}</small></td>
        <td>${esc((s[T.ModalitiesInStudy]?.Value ?? []).join(', '))}</td>
        <td>${esc(str(s, T.StudyDescription))}</td>
        <td class="c-acc">${esc(str(s, T.AccessionNumber))}</td>
        <td class="num">${esc(str(s, T.NumberOfStudyRelatedInstances))}</td>
        <td class="c-emr"></td>
      </tr>`,
    )
    .join('');
  out.innerHTML =
    (rows.length
      ? `<table class="studies"><thead><tr>${head}<th>${t('emr')}</th></tr></thead><tbody>${body}</tbody></table>`
      : `<div class="msg">${t('noStudies')}</div>`) +
    `<div class="pager">
      <button id="prev" ${query.offset === 0 ? 'disabled' : ''}>${t('prev')}</button>
      <span>${t('page')} ${page}</span>
      <button id="next" ${more ? '' : 'disabled'}>${t('next')}</button>
    </div>`;
  out.dataset.state = 'done';
  out.dataset.count = String(rows.length);
  out.querySelectorAll<HTMLTableRowElement>('tr[data-study]').forEach((tr) =>
    tr.addEventListener('click', (e) => {
      if ((e.target as HTMLElement).closest('a')) return; // the EMR link opens itself
      navigate(`/study/${encodeURIComponent(tr.dataset.study!)}`);
    }),
  );
  out.querySelectorAll<HTMLElement>('th[data-sort]').forEach((th) =>
    th.addEventListener('click', () => {
      const key = th.dataset.sort as SortKey;
      sort = sort?.key === key ? { key, dir: sort.dir === 1 ? -1 : 1 } : { key, dir: 1 };
      void load(root, navigate, query);
    }),
  );
  const go = (offset: number) => {
    const next = { ...query, offset };
    history.replaceState(null, '', urlFromQuery(next));
    void load(root, navigate, next);
  };
  out.querySelector('#prev')!.addEventListener('click', () => go(Math.max(0, query.offset - PAGE)));
  out.querySelector('#next')!.addEventListener('click', () => go(query.offset + PAGE));
  void showEmrLinks(out, rows, ctl);
}

/** Fills the EMR column with one batch request for the page. */
async function showEmrLinks(out: HTMLElement, rows: DicomJson[], ctl: AbortController): Promise<void> {
  const uids = rows.map((s) => str(s, T.StudyInstanceUID)).filter(Boolean);
  try {
    const links = await studiesEmrLinks(uids);
    if (ctl.signal.aborted) return;
    out.querySelectorAll<HTMLTableRowElement>('tr[data-study]').forEach((tr) => {
      const link = links.get(tr.dataset.study!);
      if (link) tr.querySelector('.c-emr')!.append(emrAnchor(link, link.recordId));
    });
    out.dataset.emr = 'done';
  } catch (e) {
    out.dataset.emr = e instanceof EmrUnavailable ? 'unavailable' : 'error';
    console.warn(`EMR links: ${e}`);
  }
}
