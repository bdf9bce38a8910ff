// UI strings in English and Vietnamese. The browser language decides by
// default; the choice in the top bar is remembered in localStorage.

export type Lang = 'en' | 'vi';

const en = {
  patientName: 'Patient name',
  patientId: 'Patient ID',
  accession: 'Accession',
  dateFrom: 'Date from',
  dateTo: 'Date to',
  modality: 'Modality',
  any: 'Any',
  search: 'Search',
  clear: 'Clear',
  studyDate: 'Date',
  modalities: 'Modalities',
  description: 'Description',
  instances: 'Images',
  noStudies: 'No studies found.',
  loading: 'Loading…',
  prev: '‹ Previous',
  next: 'Next ›',
  page: 'Page',
  error: 'Error',
  series: 'Series',
  images: 'images',
  windowLevel: 'Window/level',
  length: 'Length',
  zoom: 'Zoom',
  pan: 'Pan',
  reset: 'Reset',
  invert: 'Invert',
  presets: 'Preset',
  brain: 'CT brain',
  lung: 'CT lung',
  bone: 'CT bone',
  abdomen: 'CT abdomen',
  slice: 'Image',
  back: 'Studies',
  noImages: 'This series has no displayable images.',
  help: 'Wheel or ↑/↓: scroll · left drag: tool · right drag: zoom · middle drag: pan',
};

type Dict = typeof en;

const vi: Dict = {
  patientName: 'Tên bệnh nhân',
  patientId: 'Mã bệnh nhân',
  accession: 'Số tiếp nhận',
  dateFrom: 'Từ ngày',
  dateTo: 'Đến ngày',
  modality: 'Loại máy',
  any: 'Tất cả',
  search: 'Tìm kiếm',
  clear: 'Xóa',
  studyDate: 'Ngày',
  modalities: 'Loại máy',
  description: 'Mô tả',
  instances: 'Số ảnh',
  noStudies: 'Không tìm thấy ca chụp nào.',
  loading: 'Đang tải…',
  prev: '‹ Trước',
  next: 'Sau ›',
  page: 'Trang',
  error: 'Lỗi',
  series: 'Loạt ảnh',
  images: 'ảnh',
  windowLevel: 'Cửa sổ/mức',
  length: 'Đo chiều dài',
  zoom: 'Phóng to',
  pan: 'Di chuyển',
  reset: 'Đặt lại',
  invert: 'Đảo màu',
  presets: 'Cửa sổ mẫu',
  brain: 'CT não',
  lung: 'CT phổi',
  bone: 'CT xương',
  abdomen: 'CT bụng',
  slice: 'Ảnh',
  back: 'Danh sách ca chụp',
  noImages: 'Loạt ảnh này không có ảnh hiển thị được.',
  help: 'Con lăn hoặc ↑/↓: cuộn · kéo chuột trái: công cụ · kéo chuột phải: phóng to · kéo chuột giữa: di chuyển',
};

const dicts: Record<Lang, Dict> = { en, vi };

function initial(): Lang {
  const saved = localStorage.getItem('phim.lang');
  if (saved === 'en' || saved === 'vi') return saved;
  return navigator.language.toLowerCase().startsWith('vi') ? 'vi' : 'en';
}

let current: Lang = initial();
const listeners: Array<() => void> = [];

export function lang(): Lang {
  return current;
}

export function setLang(l: Lang): void {
  current = l;
  localStorage.setItem('phim.lang', l);
  document.documentElement.lang = l;
  listeners.forEach((f) => f());
}

export function onLangChange(f: () => void): void {
  listeners.push(f);
}

export function t(key: keyof Dict): string {
  return dicts[current][key];
}

/** DICOM date YYYYMMDD shown in the language's usual order. */
export function formatDate(d: string): string {
  if (!/^\d{8}$/.test(d)) return d;
  const y = d.slice(0, 4), m = d.slice(4, 6), day = d.slice(6, 8);
  return current === 'vi' ? `${day}/${m}/${y}` : `${y}-${m}-${day}`;
}
