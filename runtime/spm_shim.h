#pragma once
// The C face of libsentencepiece (runtime/spm_shim.cpp), built as its own shared library
// libmoe_spm.so and loaded by runtime/tokenizer.cpp into a link-map namespace of its own.
//
// Nothing allocated on one side of this face is freed on the other: the shim runs with its own
// copy of the C library (and so its own heap), so buffers it returns go back through
// moe_spm_release. No function throws; each returns null or non-zero and writes a message to
// err[errlen] instead.
#include <stddef.h>

extern "C" {

// A processor for the serialized ModelProto bytes[n], or null (err says why).
void* moe_spm_load(const char* bytes, size_t n, char* err, size_t errlen);
void moe_spm_free(void* sp);
// *ids[*count]: the pieces of text[n]; 0 on success. *ids is null when there are none.
int moe_spm_encode(void* sp, const char* text, size_t n, int** ids, size_t* count, char* err,
                   size_t errlen);
// *text[*len]: the text of ids[n]; 0 on success.
int moe_spm_decode(void* sp, const int* ids, size_t n, char** text, size_t* len, char* err,
                   size_t errlen);
// Frees a buffer that moe_spm_encode or moe_spm_decode returned (null is fine).
void moe_spm_release(void* buffer);
int moe_spm_piece_size(void* sp);
int moe_spm_bos_id(void* sp);
int moe_spm_eos_id(void* sp);

}  // extern "C"
