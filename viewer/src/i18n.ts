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
  noSuchStudy: 'This archive has no study',
  loading: 'Loading…',
  prev: '‹ Previous',
  next: 'Next ›',
  page: 'Page',
  error: 'Error',
  series: 'Series',
  images: 'images',
  image: 'image',
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
  studyTime: 'Time',
  slice: 'Image',
  back: 'Studies',
  noImages: 'This series has no displayable images.',
  angle: 'Angle',
  ellipse: 'Ellipse ROI',
  sync: 'Link',
  priors: 'Other studies of the patient',
  prior: 'PRIOR',
  later: 'LATER STUDY',
  otherStudy: 'OTHER STUDY',
  privateTag: 'Private',
  bulkData: 'bulk data',
  items: 'items',
  item: 'Item',
  frame: 'frame',
  defaultWindow: 'Default (stored)',
  layout: 'Layout',
  cine: 'Cine',
  play: 'Play',
  pause: 'Pause',
  fps: 'fps',
  tags: 'Tags',
  download: 'Download',
  downloadTitle: 'The study as a ZIP with a DICOMDIR, as on a patient CD',
  downloadFailed: 'Download failed',
  tagSearch: 'Filter by tag, name or value',
  tagName: 'Name',
  tagValue: 'Value',
  close: 'Close',
  shortcuts: 'Keyboard shortcuts',
  helpButton: 'Help',
  openInEmr: 'Open in EMR',
  emrRecord: 'EMR record',
  emr: 'EMR',
  studyUidFilter: 'Studies',
  noThumbnail: 'no preview',
  emptyViewport: 'Click a series to show it here',
  scrollbar: 'Image',
  hint: 'Wheel or ↑/↓: scroll · left drag: tool · right drag: zoom · middle drag: pan · ? : shortcuts',
  'key.scroll': 'Next / previous image',
  'key.page': '10 images forward / back',
  'key.ends': 'First / last image',
  'key.wl': 'Window/level tool (left drag)',
  'key.zoom': 'Zoom tool',
  'key.pan': 'Pan tool',
  'key.length': 'Length measurement (mm)',
  'key.angle': 'Angle measurement',
  'key.ellipse': 'Elliptical region: mean, SD, area',
  'key.sync': 'Link scrolling of the viewports (by position in the patient)',
  'key.presets': 'Window presets: stored default, brain, lung, bone, abdomen',
  'key.invert': 'Invert',
  'key.reset': 'Reset view (zoom, pan, window, invert)',
  'key.cine': 'Play / pause cine',
  'key.layout': 'Layout 1×1 / 2×1 / 2×2',
  'key.viewport': 'Next viewport',
  'key.tags': 'DICOM tag browser',
  'key.help': 'This help',
  'key.close': 'Close panel',
  'key.mouse': 'Mouse: wheel scrolls, left drag uses the tool, right drag zooms, middle drag pans',
  login: 'Log in',
  logout: 'Log out',
  signedInAs: 'Signed in as',
  loginNeeded: 'This archive needs you to log in.',
  loginEnded: 'Your session has ended. Please log in again.',
  loginFailed: 'Logging in did not succeed. Please try again.',
  loginUnavailable: 'This archive requires authentication but offers the viewer no way to log in. Ask your administrator.',
  loginNoProvider: 'The login service cannot be reached.',
  authConfigError: 'The archive cannot be reached',
  retry: 'Retry',
  forbidden: 'Your account is not allowed to see this (403 Forbidden).',
  sharedLink: 'Shared link',
  shareExpires: 'expires',
  shareExpired: 'This link has expired.',
  shareInvalid: 'This link is not valid.',
  shareForbidden: 'This link does not open this study.',
  shareAskAgain: 'Ask the person who sent it for a new link.',
  shareOpenStudy: 'Open the shared study',
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
  noSuchStudy: 'Kho lưu trữ không có ca chụp',
  loading: 'Đang tải…',
  prev: '‹ Trước',
  next: 'Sau ›',
  page: 'Trang',
  error: 'Lỗi',
  series: 'Loạt ảnh',
  images: 'ảnh',
  image: 'ảnh',
  windowLevel: 'Cửa sổ',
  length: 'Đo dài',
  zoom: 'Thu phóng',
  pan: 'Di chuyển',
  reset: 'Đặt lại',
  invert: 'Đảo màu',
  presets: 'Cửa sổ mẫu',
  brain: 'CT não',
  lung: 'CT phổi',
  bone: 'CT xương',
  abdomen: 'CT bụng',
  studyTime: 'Giờ',
  slice: 'Ảnh',
  back: 'Danh sách ca chụp',
  noImages: 'Loạt ảnh này không có ảnh hiển thị được.',
  angle: 'Đo góc',
  ellipse: 'Vùng elip',
  sync: 'Liên kết',
  priors: 'Ca chụp khác của người bệnh',
  prior: 'CA TRƯỚC',
  later: 'CA SAU',
  otherStudy: 'CA KHÁC',
  privateTag: 'Riêng',
  bulkData: 'dữ liệu lớn',
  items: 'mục',
  item: 'Mục',
  frame: 'khung',
  defaultWindow: 'Mặc định (lưu trong ảnh)',
  layout: 'Bố cục',
  cine: 'Cine',
  play: 'Phát',
  pause: 'Dừng',
  fps: 'hình/s',
  tags: 'Thẻ',
  download: 'Tải về',
  downloadTitle: 'Ca chụp dạng ZIP kèm DICOMDIR, như đĩa CD của bệnh nhân',
  downloadFailed: 'Tải về không thành công',
  tagSearch: 'Lọc theo thẻ, tên hoặc giá trị',
  tagName: 'Tên',
  tagValue: 'Giá trị',
  close: 'Đóng',
  shortcuts: 'Phím tắt',
  helpButton: 'Trợ giúp',
  openInEmr: 'Mở bệnh án điện tử',
  emrRecord: 'Hồ sơ bệnh án',
  emr: 'Bệnh án',
  studyUidFilter: 'Ca chụp',
  noThumbnail: 'không có ảnh xem trước',
  emptyViewport: 'Bấm vào một loạt ảnh để hiển thị ở đây',
  scrollbar: 'Ảnh',
  hint: 'Con lăn hoặc ↑/↓: cuộn · kéo chuột trái: công cụ · kéo chuột phải: phóng to · kéo chuột giữa: di chuyển · ? : phím tắt',
  'key.scroll': 'Ảnh kế tiếp / trước',
  'key.page': 'Tiến / lùi 10 ảnh',
  'key.ends': 'Ảnh đầu / cuối',
  'key.wl': 'Công cụ cửa sổ/mức (kéo chuột trái)',
  'key.zoom': 'Công cụ phóng to',
  'key.pan': 'Công cụ di chuyển',
  'key.length': 'Đo chiều dài (mm)',
  'key.angle': 'Đo góc',
  'key.ellipse': 'Vùng elip: trung bình, độ lệch chuẩn, diện tích',
  'key.sync': 'Liên kết cuộn giữa các khung (theo vị trí trên người bệnh)',
  'key.presets': 'Cửa sổ mẫu: mặc định, não, phổi, xương, bụng',
  'key.invert': 'Đảo màu',
  'key.reset': 'Đặt lại (phóng to, vị trí, cửa sổ, đảo màu)',
  'key.cine': 'Phát / dừng cine',
  'key.layout': 'Bố cục 1×1 / 2×1 / 2×2',
  'key.viewport': 'Khung hình kế tiếp',
  'key.tags': 'Xem thẻ DICOM',
  'key.help': 'Bảng trợ giúp này',
  'key.close': 'Đóng bảng',
  'key.mouse': 'Chuột: con lăn để cuộn, kéo trái dùng công cụ, kéo phải phóng to, kéo giữa di chuyển',
  login: 'Đăng nhập',
  logout: 'Đăng xuất',
  signedInAs: 'Đã đăng nhập:',
  loginNeeded: 'Kho lưu trữ này yêu cầu đăng nhập.',
  loginEnded: 'Phiên làm việc đã kết thúc. Vui lòng đăng nhập lại.',
  loginFailed: 'Đăng nhập không thành công. Vui lòng thử lại.',
  loginUnavailable: 'Kho lưu trữ yêu cầu xác thực nhưng không cung cấp cách đăng nhập cho trình xem. Vui lòng liên hệ quản trị viên.',
  loginNoProvider: 'Không kết nối được dịch vụ đăng nhập.',
  authConfigError: 'Không kết nối được kho lưu trữ',
  retry: 'Thử lại',
  forbidden: 'Tài khoản của bạn không có quyền xem nội dung này (403 Forbidden).',
  sharedLink: 'Liên kết chia sẻ',
  shareExpires: 'hết hạn',
  shareExpired: 'Liên kết này đã hết hạn.',
  shareInvalid: 'Liên kết này không hợp lệ.',
  shareForbidden: 'Liên kết này không mở ca chụp này.',
  shareAskAgain: 'Vui lòng xin người đã gửi một liên kết mới.',
  shareOpenStudy: 'Mở ca chụp được chia sẻ',
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

/** The locale for dates: Vietnamese, or the browser's own English variant. */
function locale(): string {
  if (current === 'vi') return 'vi-VN';
  const nav = navigator.language || 'en-US';
  return nav.toLowerCase().startsWith('en') ? nav : 'en-US';
}

/** DICOM date YYYYMMDD in the local format (vi: 15/01/2024, en-US: 01/15/2024). */
export function formatDate(d: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(d);
  if (!m) return d;
  const date = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  return new Intl.DateTimeFormat(locale(), { year: 'numeric', month: '2-digit', day: '2-digit', timeZone: 'UTC' }).format(date);
}

/** DICOM time HHMMSS(.ffffff) as HH:MM. */
export function formatTime(tm: string): string {
  const m = /^(\d{2})(\d{2})?/.exec(tm);
  return m ? `${m[1]}:${m[2] ?? '00'}` : tm;
}

/** A moment (seconds since 1970) as the local date and time: 02/12/2026 14:05. */
export function formatDateTime(seconds: number): string {
  return new Intl.DateTimeFormat(locale(), {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
  }).format(new Date(seconds * 1000));
}

/** A number in the UI language's format. */
export function formatNumber(n: number, digits = 1): string {
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: digits, minimumFractionDigits: digits }).format(n);
}
