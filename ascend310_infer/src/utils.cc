/**
 * File helpers of the Ascend 310 application (see inc/utils.h).
 * POSIX calls rather than std::filesystem: the GCC 7 toolchains of Ascend 310 hosts need an extra
 * -lstdc++fs for it, and these few calls are all we need.
 */
#include "inc/utils.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>

namespace {
const char kBinSuffix[] = ".bin";
const size_t kBinSuffixLen = sizeof(kBinSuffix) - 1;

bool EndsWithBin(const std::string &name) {
  return name.size() > kBinSuffixLen && name.compare(name.size() - kBinSuffixLen, kBinSuffixLen, kBinSuffix) == 0;
}
}  // namespace

bool IsDir(const std::string &path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool IsFile(const std::string &path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

std::vector<std::string> ListBinFiles(const std::string &dir) {
  std::vector<std::string> files;
  DIR *handle = opendir(dir.c_str());
  if (handle == nullptr) {
    std::cerr << "error: cannot open input directory " << dir << ": " << std::strerror(errno) << std::endl;
    return files;
  }
  // readdir's d_type is DT_UNKNOWN on some file systems, so ask stat() whether an entry is a file.
  for (struct dirent *entry = readdir(handle); entry != nullptr; entry = readdir(handle)) {
    const std::string name = entry->d_name;
    const std::string path = dir + "/" + name;
    if (EndsWithBin(name) && IsFile(path)) {
      files.push_back(path);
    }
  }
  closedir(handle);
  std::sort(files.begin(), files.end());
  return files;
}

std::string FileStem(const std::string &path) {
  const size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (EndsWithBin(name)) {
    name.resize(name.size() - kBinSuffixLen);
  }
  return name;
}

bool MakeDirs(const std::string &dir) {
  // Create every prefix ending before a '/', then the whole path; EEXIST is fine at each step.
  for (size_t pos = dir.find('/', 1); ; pos = dir.find('/', pos + 1)) {
    const std::string prefix = dir.substr(0, pos);
    if (!prefix.empty() && mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      std::cerr << "error: cannot create directory " << prefix << ": " << std::strerror(errno) << std::endl;
      return false;
    }
    if (pos == std::string::npos) {
      break;
    }
  }
  if (!IsDir(dir)) {
    std::cerr << "error: " << dir << " exists and is not a directory" << std::endl;
    return false;
  }
  return true;
}

bool ReadBinary(const std::string &path, std::vector<char> *data) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    std::cerr << "error: cannot open " << path << std::endl;
    return false;
  }
  const std::streamsize size = in.tellg();
  data->resize(static_cast<size_t>(size));
  in.seekg(0, std::ios::beg);
  if (size > 0 && !in.read(data->data(), size)) {
    std::cerr << "error: cannot read " << path << std::endl;
    return false;
  }
  return true;
}

bool WriteOutputs(const std::string &result_dir, const std::string &stem,
                  const std::vector<mindspore::MSTensor> &outputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string path = result_dir + "/" + stem + "_" + std::to_string(i) + ".bin";
    // Data() is host memory: both runtimes copy the outputs back from the device (no device output buffer is set).
    const std::shared_ptr<const void> data = outputs[i].Data();
    const size_t size = outputs[i].DataSize();
    if (data == nullptr && size > 0) {
      std::cerr << "error: output " << i << " of " << stem << " has no data" << std::endl;
      return false;
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char *>(data.get()), static_cast<std::streamsize>(size));
    if (!out) {
      std::cerr << "error: cannot write " << size << " bytes to " << path << " (disk full?)" << std::endl;
      return false;
    }
  }
  return true;
}

std::string ShapeString(const std::vector<int64_t> &shape) {
  std::string text;
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i == 0 ? "" : "x") + std::to_string(shape[i]);
  }
  return text.empty() ? "scalar" : text;
}
