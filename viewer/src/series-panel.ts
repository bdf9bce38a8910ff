// The series panel of the study view: one entry per series with the
// server's thumbnail, or a text placeholder (number, modality, image count)
// when the thumbnail cannot be shown.

import { DicomJson, str, T, thumbnailUrl } from './api';
import { t } from './i18n';

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function renderSeriesPanel(
  panel: HTMLElement,
  studyUid: string,
  series: DicomJson[],
  onPick: (s: DicomJson) => void,
): void {
  panel.innerHTML = series
    .map((s) => {
      const uid = str(s, T.SeriesInstanceUID);
      const count = str(s, T.NumberOfSeriesRelatedInstances);
      const unit = count === '1' ? t('image') : t('images');
      return `<div class="series-item" data-series="${esc(uid)}" tabindex="0">
        <div class="thumb">
          <img alt="" loading="lazy" src="${esc(thumbnailUrl(studyUid, uid))}">
          <div class="thumb-placeholder" hidden>
            <b>${esc(str(s, T.Modality))}</b><span>#${esc(str(s, T.SeriesNumber))}</span><span>${esc(count)} ${unit}</span>
            <small>${t('noThumbnail')}</small>
          </div>
        </div>
        <div class="series-text"><b>${esc(str(s, T.Modality))} ${esc(str(s, T.SeriesNumber))}</b> ${esc(str(s, T.SeriesDescription))}
        <small>${esc(count)} ${unit}</small></div></div>`;
    })
    .join('');
  panel.querySelectorAll<HTMLElement>('.series-item').forEach((el, i) => {
    const img = el.querySelector('img')!;
    const fail = () => {
      img.hidden = true;
      el.querySelector<HTMLElement>('.thumb-placeholder')!.hidden = false;
      el.dataset.thumb = 'placeholder';
    };
    img.addEventListener('error', fail);
    img.addEventListener('load', () => {
      if (!img.naturalWidth) fail();
      else el.dataset.thumb = 'image';
    });
    el.addEventListener('click', () => onPick(series[i]));
    el.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') onPick(series[i]);
    });
  });
}

/** Marks the series shown in the active viewport. */
export function markActiveSeries(panel: HTMLElement, seriesUid: string | null): void {
  panel.querySelectorAll<HTMLElement>('.series-item').forEach((el) =>
    el.classList.toggle('active', el.dataset.series === seriesUid),
  );
}
