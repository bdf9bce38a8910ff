// The DICOM tag browser: every attribute of the current instance (WADO-RS
// instance metadata), nested sequences as indented items,
// filtered by tag, name or value.

import { data as dcmData } from 'dcmjs';

import { DicomJson, personName } from './api';
import { t } from './i18n';

interface Row {
  tag: string; // "(0010,0010)" or "" for a sequence item
  name: string;
  vr: string;
  value: string;
  depth: number;
  children: Row[];
}

function tagName(tag: string): string {
  if (parseInt(tag.slice(0, 4), 16) % 2 === 1) return t('privateTag');
  const key = `(${tag.slice(0, 4)},${tag.slice(4, 8)})`;
  return dcmData.DicomMetaDictionary.dictionary[key]?.name ?? '';
}

function formatValue(el: DicomJson[string]): string {
  if (el.BulkDataURI) return `[${t('bulkData')}]`;
  const inline = (el as { InlineBinary?: string }).InlineBinary;
  if (inline) return `[${Math.floor((inline.length * 3) / 4)} bytes]`;
  const vals = el.Value ?? [];
  const text = vals
    .map((v) => (el.vr === 'PN' && v && typeof v === 'object' ? personName(v as { Alphabetic?: string }) : String(v)))
    .join(' \\ ');
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

function buildRows(ds: DicomJson, depth: number): Row[] {
  return Object.keys(ds)
    .sort()
    .map((tag) => {
      const el = ds[tag];
      const row: Row = {
        tag: `(${tag.slice(0, 4)},${tag.slice(4, 8)})`,
        name: tagName(tag),
        vr: el.vr,
        value: '',
        depth,
        children: [],
      };
      if (el.vr === 'SQ') {
        const items = (el.Value ?? []) as DicomJson[];
        row.value = `${items.length} ${items.length === 1 ? t('item').toLowerCase() : t('items')}`;
        row.children = items.map((item, i) => ({
          tag: '',
          name: `${t('item')} ${i + 1}`,
          vr: '',
          value: '',
          depth: depth + 1,
          children: buildRows(item, depth + 2),
        }));
      } else {
        row.value = formatValue(el);
      }
      return row;
    });
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Rows to show for a filter: matching rows with their ancestors; all descendants of a match. */
function visible(rows: Row[], needle: string, out: Row[]): boolean {
  let any = false;
  for (const r of rows) {
    const self = !needle || `${r.tag} ${r.tag.replace(/[(),]/g, '')} ${r.name} ${r.vr} ${r.value}`.toLowerCase().includes(needle);
    const mark = out.length;
    out.push(r);
    const child = r.children.length ? visible(r.children, self ? '' : needle, out) : false;
    if (self || child) any = true;
    else out.splice(mark); // neither it nor a descendant matches
  }
  return any;
}

/**
 * Opens the browser in `host` for an instance; returns a function that
 * closes it. `filter` pre-fills the search (kept when following the image);
 * `focus` puts the cursor in it.
 */
export function openTagBrowser(
  host: HTMLElement,
  title: string,
  load: () => Promise<DicomJson>,
  { filter = '', focus = true }: { filter?: string; focus?: boolean } = {},
): () => void {
  host.hidden = false;
  host.innerHTML = `
    <div class="tags-head">
      <b>${t('tags')}</b> <small class="tags-title">${esc(title)}</small>
      <button class="tags-close" aria-label="${t('close')}">✕</button>
    </div>
    <input class="tags-search" type="search" placeholder="${t('tagSearch')}" aria-label="${t('tagSearch')}">
    <div class="tags-body"><div class="msg">${t('loading')}</div></div>`;
  const body = host.querySelector<HTMLElement>('.tags-body')!;
  const search = host.querySelector<HTMLInputElement>('.tags-search')!;
  search.value = filter;
  const close = () => {
    host.hidden = true;
    host.innerHTML = '';
    host.dataset.state = 'closed';
  };
  host.querySelector('.tags-close')!.addEventListener('click', close);
  host.dataset.state = 'loading';
  let rows: Row[] = [];
  const render = () => {
    const shown: Row[] = [];
    visible(rows, search.value.trim().toLowerCase(), shown);
    body.innerHTML = `<table class="tags-table"><thead><tr><th>Tag</th><th>${t('tagName')}</th><th>VR</th><th>${t('tagValue')}</th></tr></thead><tbody>${shown
      .map(
        (r) => `<tr class="${r.tag ? '' : 'item'}" data-tag="${esc(r.tag)}">
          <td style="padding-left:${4 + r.depth * 14}px">${esc(r.tag)}</td><td>${esc(r.name)}</td><td>${esc(r.vr)}</td>
          <td class="tag-value">${esc(r.value)}</td></tr>`,
      )
      .join('')}</tbody></table>`;
    host.dataset.rows = String(shown.length);
  };
  search.addEventListener('input', render);
  const token = String(Math.random());
  host.dataset.token = token;
  load()
    .then((ds) => {
      if (host.hidden || host.dataset.token !== token) return; // closed, or opened for another image

      rows = buildRows(ds, 0);
      render();
      host.dataset.state = 'done';
      if (focus) search.focus();
    })
    .catch((e) => {
      if (host.dataset.token !== token) return;
      body.innerHTML = `<div class="msg err">${t('error')}: ${esc(String(e))}</div>`;
      host.dataset.state = 'error';
    });
  return close;
}
