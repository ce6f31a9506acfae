//! WAV file reading and writing (from and to byte buffers).
