// The part of dcmjs the viewer uses: the data dictionary (tag names).
declare module 'dcmjs' {
  export const data: {
    DicomMetaDictionary: {
      /** Keyed by punctuated tag "(0010,0010)". */
      dictionary: Record<string, { name: string; vr: string } | undefined>;
    };
  };
}
