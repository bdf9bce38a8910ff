-- Where each frame lies in the stored object (dicom::frames), so frame
-- retrieval reads byte ranges (PS3.18 §10.4.1.1.4).
ALTER TABLE instances ADD COLUMN frame_index BYTEA;
