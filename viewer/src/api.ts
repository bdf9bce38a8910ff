// A small DICOMweb (QIDO-RS / WADO-RS metadata) client for the viewer.

import { authFetch } from './auth';
import { t } from './i18n';

export const DICOMWEB = `${location.origin}/dicomweb`;

export type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string }>;

/**
 * A DICOM PN value for display. Components are Family^Given^Middle^Prefix^Suffix;
 * they are shown in that order (family name first, as in Vietnamese and on
 * most worklists) separated by spaces, with prefix before and suffix after a
 * comma: "Nguyễn^Văn An" -> "Nguyễn Văn An", "Smith^John^^Dr^Jr" -> "Dr Smith John, Jr".
 */
export function personName(v: { Alphabetic?: string; Ideographic?: string; Phonetic?: string } | string): string {
  const raw = typeof v === 'string' ? v : (v.Alphabetic ?? v.Ideographic ?? v.Phonetic ?? '');
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = raw.split('^').map((c) => c.trim());
  const main = [prefix, family, given, middle].filter(Boolean).join(' ');
  return suffix ? `${main}, ${suffix}` : main;
}

/** First value of a tag as a string ('' when absent); PN through {@link personName}. */
export function str(ds: DicomJson, tag: string): string {
  const v = ds[tag]?.Value?.[0];
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return personName(v as { Alphabetic?: string });
  return String(v);
}

export function values(ds: DicomJson, tag: string): unknown[] {
  return ds[tag]?.Value ?? [];
}

export function num(ds: DicomJson, tag: string, index = 0): number | undefined {
  const v = ds[tag]?.Value?.[index];
  if (v === undefined || v === null) return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** The server refused a request (403): the caller, or the share link, may not see this. */
export class Forbidden extends Error {
  constructor() {
    super(t('forbidden'));
  }
}

async function getJson(url: string, signal?: AbortSignal): Promise<DicomJson[]> {
  const res = await authFetch(url, { headers: { Accept: 'application/dicom+json' }, signal });
  if (res.status === 204) return [];
  if (res.status === 403) throw new Forbidden();
  if (!res.ok) throw new Error(`${res.status} ${res.statusText}: ${url.replace(location.origin, '')}`);
  const text = await res.text();
  return text ? (JSON.parse(text) as DicomJson[]) : [];
}

export interface StudyQuery {
  patientName?: string;
  patientId?: string;
  accession?: string;
  dateFrom?: string; // YYYY-MM-DD (input type=date)
  dateTo?: string;
  modality?: string;
  /** StudyInstanceUIDs (UID list matching), e.g. from `/?studyUID=a,b`. */
  studyUids?: string[];
  limit: number;
  offset: number;
}

export const T = {
  StudyDate: '00080020',
  AvailableTransferSyntaxUID: '00083002',
  SamplesPerPixel: '00280002',
  PhotometricInterpretation: '00280004',
  StudyTime: '00080030',
  AccessionNumber: '00080050',
  ModalitiesInStudy: '00080061',
  Modality: '00080060',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  PatientName: '00100010',
  PatientID: '00100020',
  IssuerOfPatientID: '00100021',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  FrameOfReferenceUID: '00200052',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfFrames: '00280008',
  PixelSpacing: '00280030',
  SOPInstanceUID: '00080018',
  WindowCenter: '00281050',
  WindowWidth: '00281051',
  RecommendedDisplayFrameRate: '00082144',
  CineRate: '00180040',
  FrameTime: '00181063',
  SliceThickness: '00180050',
  SliceLocation: '00201041',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
} as const;

export function studyQueryUrl(q: StudyQuery): string {
  const p = new URLSearchParams();
  if (q.patientName) {
    p.set('PatientName', q.patientName);
    p.set('fuzzymatching', 'true');
  }
  if (q.patientId) p.set('PatientID', q.patientId);
  if (q.accession) p.set('AccessionNumber', q.accession);
  const from = (q.dateFrom ?? '').replace(/-/g, '');
  const to = (q.dateTo ?? '').replace(/-/g, '');
  if (from || to) p.set('StudyDate', from === to ? from : `${from}-${to}`);
  if (q.modality) p.set('ModalitiesInStudy', q.modality);
  if (q.studyUids?.length) p.set('StudyInstanceUID', q.studyUids.join(','));
  p.set('limit', String(q.limit));
  p.set('offset', String(q.offset));
  for (const f of [T.StudyDescription, T.ModalitiesInStudy, T.NumberOfStudyRelatedInstances]) p.append('includefield', f);
  return `${DICOMWEB}/studies?${p}`;
}

export function searchStudies(q: StudyQuery, signal?: AbortSignal): Promise<DicomJson[]> {
  return getJson(studyQueryUrl(q), signal);
}

/**
 * The study's QIDO row, or undefined. Only a row of that study counts: a
 * server may narrow a search (a share link's searches reach its own study).
 */
export async function getStudy(studyUid: string): Promise<DicomJson | undefined> {
  const p = new URLSearchParams({ StudyInstanceUID: studyUid });
  for (const f of [T.StudyDescription, T.ModalitiesInStudy, T.PatientBirthDate, T.PatientSex, T.IssuerOfPatientID]) {
    p.append('includefield', f);
  }
  return (await getJson(`${DICOMWEB}/studies?${p}`)).find((s) => str(s, T.StudyInstanceUID) === studyUid);
}

/** The studies of a patient (for priors), with what the overlay and the list show. */
export function patientStudies(patientId: string): Promise<DicomJson[]> {
  const p = new URLSearchParams({ PatientID: patientId, limit: '50' });
  for (const f of [T.StudyDescription, T.ModalitiesInStudy, T.PatientBirthDate, T.PatientSex, T.IssuerOfPatientID]) {
    p.append('includefield', f);
  }
  return getJson(`${DICOMWEB}/studies?${p}`);
}

export function searchSeries(studyUid: string): Promise<DicomJson[]> {
  const p = new URLSearchParams();
  for (const f of [T.SeriesDescription, T.SeriesNumber, T.NumberOfSeriesRelatedInstances]) p.append('includefield', f);
  return getJson(`${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/series?${p}`);
}

export function seriesMetadata(studyUid: string, seriesUid: string): Promise<DicomJson[]> {
  return getJson(
    `${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(seriesUid)}/metadata`,
  );
}

/** All attributes of one instance (for the tag browser). */
export async function instanceMetadata(studyUid: string, seriesUid: string, sopUid: string): Promise<DicomJson> {
  const rows = await getJson(
    `${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(seriesUid)}/instances/${encodeURIComponent(sopUid)}/metadata`,
  );
  if (!rows[0]) throw new Error(`no metadata for instance ${sopUid}`);
  return rows[0];
}

/** A series thumbnail (image/jpeg) rendered by the server. */
export function thumbnailUrl(studyUid: string, seriesUid: string, size = 128): string {
  return `${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(seriesUid)}/thumbnail?viewport=${size},${size}`;
}

export function frameUrl(studyUid: string, seriesUid: string, sopUid: string, frame: number): string {
  return `${DICOMWEB}/studies/${studyUid}/series/${seriesUid}/instances/${sopUid}/frames/${frame}`;
}
