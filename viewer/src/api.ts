// A small DICOMweb (QIDO-RS / WADO-RS metadata) client for the viewer.

export const DICOMWEB = `${location.origin}/dicomweb`;

export type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string }>;

/** First value of a tag as a string ('' when absent); PN as "Family Given". */
export function str(ds: DicomJson, tag: string): string {
  const v = ds[tag]?.Value?.[0];
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') {
    const pn = (v as { Alphabetic?: string }).Alphabetic ?? '';
    return pn.replace(/\^+/g, ' ').trim();
  }
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

async function getJson(url: string): Promise<DicomJson[]> {
  const res = await fetch(url, { headers: { Accept: 'application/dicom+json' } });
  if (res.status === 204) return [];
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
  limit: number;
  offset: number;
}

export const T = {
  StudyDate: '00080020',
  AccessionNumber: '00080050',
  ModalitiesInStudy: '00080061',
  Modality: '00080060',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  PatientName: '00100010',
  PatientID: '00100020',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  ImagePositionPatient: '00200032',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfFrames: '00280008',
  PixelSpacing: '00280030',
  SOPInstanceUID: '00080018',
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
  p.set('limit', String(q.limit));
  p.set('offset', String(q.offset));
  for (const f of [T.StudyDescription, T.ModalitiesInStudy, T.NumberOfStudyRelatedInstances]) p.append('includefield', f);
  return `${DICOMWEB}/studies?${p}`;
}

export function searchStudies(q: StudyQuery): Promise<DicomJson[]> {
  return getJson(studyQueryUrl(q));
}

export function getStudy(studyUid: string): Promise<DicomJson[]> {
  const p = new URLSearchParams({ StudyInstanceUID: studyUid });
  for (const f of [T.StudyDescription, T.ModalitiesInStudy]) p.append('includefield', f);
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

export function frameUrl(studyUid: string, seriesUid: string, sopUid: string, frame: number): string {
  return `${DICOMWEB}/studies/${studyUid}/series/${seriesUid}/instances/${sopUid}/frames/${frame}`;
}
