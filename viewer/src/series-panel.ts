// The series panel of the study view: one entry per series with the
// server's thumbnail, or a text placeholder (number, modality, image count)
// when the thumbnail cannot be shown.

import { DicomJson, patientStudies, searchSeries, str, T, thumbnailUrl } from './api';
import { setAuthImage } from './auth';
import { formatDate, t } from './i18n';

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
          <img alt="" loading="lazy">
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
    setAuthImage(img, thumbnailUrl(studyUid, str(series[i], T.SeriesInstanceUID)));
    el.addEventListener('click', () => onPick(series[i]));
    el.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') onPick(series[i]);
    });
  });
}

/**
 * The patient's other studies (same Patient ID: priors, or later ones when
 * an older study is open), newest first, under the
 * series of the study opened: each opens to its series, which load into
 * the active viewport like the study's own (`onPick(series, study)`).
 * `host.dataset.state` says `loading`, `done` or `error`.
 */
export async function renderPriors(
  host: HTMLElement,
  study: DicomJson,
  onPick: (s: DicomJson, study: DicomJson) => void,
): Promise<void> {
  const patientId = str(study, T.PatientID);
  const current = str(study, T.StudyInstanceUID);
  host.dataset.state = 'loading';
  if (!patientId) {
    host.dataset.state = 'done';
    return;
  }
  let priors: DicomJson[];
  // A Patient ID is unique only within its issuer (PS3.3 C.7.1.1): another
  // hospital's patient may carry the same one. Phim does not match on the
  // issuer, so the list keeps only studies whose issuer is this study's.
  const issuer = str(study, T.IssuerOfPatientID);
  try {
    priors = (await patientStudies(patientId)).filter(
      (s) => str(s, T.StudyInstanceUID) !== current && str(s, T.IssuerOfPatientID) === issuer,
    );
  } catch (e) {
    host.dataset.state = 'error';
    console.warn(`prior studies: ${e}`);
    return;
  }
  priors.sort((a, b) => str(b, T.StudyDate).localeCompare(str(a, T.StudyDate)));
  host.innerHTML = priors.length
    ? `<h4>${t('priors')}</h4>` +
      priors
        .map((p) => {
          const modalities = (p[T.ModalitiesInStudy]?.Value ?? []).join(', ');
          return `<div class="prior" data-study="${esc(str(p, T.StudyInstanceUID))}">
            <button class="prior-head">${esc(formatDate(str(p, T.StudyDate)))} ${esc(modalities)}
            <small>${esc(str(p, T.StudyDescription))}</small></button>
            <div class="prior-series" hidden></div></div>`;
        })
        .join('')
    : '';
  host.querySelectorAll<HTMLElement>('.prior').forEach((el, i) => {
    const prior = priors[i];
    const list = el.querySelector<HTMLElement>('.prior-series')!;
    el.querySelector('.prior-head')!.addEventListener('click', async () => {
      list.hidden = !list.hidden;
      if (list.hidden || list.dataset.state) return;
      list.dataset.state = 'loading';
      try {
        const uid = str(prior, T.StudyInstanceUID);
        renderSeriesPanel(list, uid, await searchSeries(uid), (s) => onPick(s, prior));
        list.dataset.state = 'done';
      } catch (e) {
        list.dataset.state = 'error';
        list.innerHTML = `<div class="msg err">${esc(String(e))}</div>`;
      }
    });
  });
  host.dataset.state = 'done';
}

/** Marks the series shown in the active viewport. */
export function markActiveSeries(panel: HTMLElement, seriesUid: string | null): void {
  panel.querySelectorAll<HTMLElement>('.series-item').forEach((el) =>
    el.classList.toggle('active', el.dataset.series === seriesUid),
  );
}
