/**
 * File helpers of the Ascend 310 application: list the preprocessed inputs, read them, write the logits.
 * Every function prints its own one-line error to stderr and reports failure by its return value,
 * so main() only decides whether to stop.
 */
#ifndef VIG_ASCEND310_INFER_INC_UTILS_H_
#define VIG_ASCEND310_INFER_INC_UTILS_H_

#include <string>
#include <vector>

#include "include/api/types.h"

// Regular files named *.bin directly in `dir`, as full paths, sorted (the order preprocess.py numbered them).
// Empty (with a message) if `dir` is not a readable directory.
std::vector<std::string> ListBinFiles(const std::string &dir);

// `path` without its directory and without a trailing ".bin": "a/img_000001.bin" -> "img_000001".
std::string FileStem(const std::string &path);

// True if `path` is an existing regular file / directory.
bool IsFile(const std::string &path);
bool IsDir(const std::string &path);

// mkdir -p: create `dir` and its missing parents; true if it exists as a directory afterwards.
bool MakeDirs(const std::string &dir);

// The whole file into `data`.
bool ReadBinary(const std::string &path, std::vector<char> *data);

// Output i of `outputs` as <result_dir>/<stem>_<i>.bin, raw bytes (float32 logits for our models).
bool WriteOutputs(const std::string &result_dir, const std::string &stem, const std::vector<mindspore::MSTensor> &outputs);

// "1x3x224x224", for messages.
std::string ShapeString(const std::vector<int64_t> &shape);

#endif  // VIG_ASCEND310_INFER_INC_UTILS_H_
