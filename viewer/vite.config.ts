import { defineConfig } from 'vite';

// `npm run dev` / `vite preview` proxy DICOMweb and the API (the viewer's
// /api/auth/config, EMR links) to a running phim (PHIM_URL).
const phim = process.env.PHIM_URL ?? 'http://127.0.0.1:8080';
const proxy = { '/dicomweb': phim, '/api': phim };

// cornerstone3D notes: the DICOM image loader ships its own web workers and
// must not be pre-bundled; dicom-parser is CommonJS and must be.
export default defineConfig({
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: ['dicom-parser'],
  },
  worker: { format: 'es' },
  build: { target: 'es2022', chunkSizeWarningLimit: 5000 },
  server: { proxy },
  preview: { proxy },
});
