// The study list: a search form over QIDO-RS /studies, paged.

import { DicomJson, searchStudies, str, StudyQuery, T } from './api';
import { formatDate, t } from './i18n';

const PAGE = 25;
const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'US', 'XA', 'MG', 'NM', 'PT', 'OT'];

let query: StudyQuery = { limit: PAGE, offset: 0 };

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function renderList(root: HTMLElement, navigate: (path: string) => void): void {
  const q = query;
  root.innerHTML = `
    <form class="search" id="search-form">
      <label>${t('patientName')}<input id="q-name" name="name" autocomplete="off" value="${esc(q.patientName ?? '')}"></label>
      <label>${t('patientId')}<input id="q-id" value="${esc(q.patientId ?? '')}"></label>
      <label>${t('accession')}<input id="q-acc" value="${esc(q.accession ?? '')}"></label>
      <label>${t('dateFrom')}<input id="q-from" type="date" value="${esc(q.dateFrom ?? '')}"></label>
      <label>${t('dateTo')}<input id="q-to" type="date" value="${esc(q.dateTo ?? '')}"></label>
      <label>${t('modality')}<select id="q-mod"><option value="">${t('any')}</option>${MODALITIES.map(
        (m) => `<option${m === q.modality ? ' selected' : ''}>${m}</option>`,
      ).join('')}</select></label>
      <button id="q-go" type="submit">${t('search')}</button>
      <button id="q-clear" type="button">${t('clear')}</button>
    </form>
    <div id="results"></div>`;
  const form = root.querySelector<HTMLFormElement>('#search-form')!;
  const val = (id: string) => root.querySelector<HTMLInputElement | HTMLSelectElement>(id)!.value.trim();
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    query = {
      patientName: val('#q-name'),
      patientId: val('#q-id'),
      accession: val('#q-acc'),
      dateFrom: val('#q-from'),
      dateTo: val('#q-to'),
      modality: val('#q-mod'),
      limit: PAGE,
      offset: 0,
    };
    void load(root, navigate);
  });
  root.querySelector('#q-clear')!.addEventListener('click', () => {
    query = { limit: PAGE, offset: 0 };
    renderList(root, navigate);
  });
  void load(root, navigate);
}

async function load(root: HTMLElement, navigate: (path: string) => void): Promise<void> {
  const out = root.querySelector<HTMLElement>('#results')!;
  out.innerHTML = `<div class="msg">${t('loading')}</div>`;
  out.dataset.state = 'loading';
  let rows: DicomJson[];
  try {
    rows = await searchStudies(query);
  } catch (e) {
    out.innerHTML = `<div class="msg err">${t('error')}: ${esc(String(e))}</div>`;
    out.dataset.state = 'error';
    return;
  }
  const page = Math.floor(query.offset / PAGE) + 1;
  const body = rows
    .map(
      (s) => `<tr data-study="${esc(str(s, T.StudyInstanceUID))}">
        <td class="c-name">${esc(str(s, T.PatientName))}</td>
        <td>${esc(str(s, T.PatientID))}</td>
        <td>${esc(formatDate(str(s, T.StudyDate)))}</td>
        <td>${esc((s[T.ModalitiesInStudy]?.Value ?? []).join(', '))}</td>
        <td>${esc(str(s, T.StudyDescription))}</td>
        <td>${esc(str(s, T.AccessionNumber))}</td>
        <td>${esc(str(s, T.NumberOfStudyRelatedInstances))}</td>
      </tr>`,
    )
    .join('');
  out.innerHTML =
    (rows.length
      ? `<table class="studies"><thead><tr>
          <th>${t('patientName')}</th><th>${t('patientId')}</th><th>${t('studyDate')}</th>
          <th>${t('modalities')}</th><th>${t('description')}</th><th>${t('accession')}</th><th>${t('instances')}</th>
        </tr></thead><tbody>${body}</tbody></table>`
      : `<div class="msg">${t('noStudies')}</div>`) +
    `<div class="pager">
      <button id="prev" ${query.offset === 0 ? 'disabled' : ''}>${t('prev')}</button>
      <span>${t('page')} ${page}</span>
      <button id="next" ${rows.length < PAGE ? 'disabled' : ''}>${t('next')}</button>
    </div>`;
  out.dataset.state = 'done';
  out.dataset.count = String(rows.length);
  out.querySelectorAll<HTMLTableRowElement>('tr[data-study]').forEach((tr) =>
    tr.addEventListener('click', () => navigate(`/study/${encodeURIComponent(tr.dataset.study!)}`)),
  );
  out.querySelector('#prev')!.addEventListener('click', () => {
    query = { ...query, offset: Math.max(0, query.offset - PAGE) };
    void load(root, navigate);
  });
  out.querySelector('#next')!.addEventListener('click', () => {
    query = { ...query, offset: query.offset + PAGE };
    void load(root, navigate);
  });
}
