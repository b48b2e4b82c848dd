/**
 * Ascend 310 inference step of the offline flow (preprocess.py -> this -> postprocess.py).
 *
 *   main --mindir_path=vig_ti.mindir --input_path=./preprocess_Result --result_path=./result_Files --device_id=0
 *
 * Each <input_path>/<id>.bin is one model input exactly as preprocess.py wrote it (raw float32, 1x3xSxS, the
 * evaluation transform of eval.py already applied), so no image decoding happens here: the 310 results see the
 * same pixels as eval.py. Output i of each input goes to <result_path>/<id>_<i>.bin (raw float32 logits for i = 0),
 * the layout postprocess.py and infer.py share.
 *
 * Runtime: the C++ API of MindSpore Lite 2.x (Model::Build from the .mindir file on an AscendDeviceInfo context), the
 * supported way to run a MINDIR exported by MindSpore 2.2 and later. Built with VIG_LEGACY_MS_API (CMake option
 * USE_LEGACY_MS_API), it uses the C++ API of MindSpore's own Ascend 310 package (MindSpore 2.1 and earlier) instead:
 * Serialization::Load + GraphCell. The two differ only in the block marked below and in how precision modes are
 * spelled (ResolvePrecisionMode).
 */
#include <gflags/gflags.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/status.h"
#include "include/api/types.h"
#ifdef VIG_LEGACY_MS_API
#include "include/api/serialization.h"
#endif
#include "inc/utils.h"

namespace ms = mindspore;

DEFINE_string(mindir_path, "", "exported model (export.py --file_format MINDIR, batch size 1)");
DEFINE_string(input_path, "", "directory of preprocessed inputs (*.bin, float32 1x3xSxS)");
DEFINE_string(result_path, "./result_Files", "directory for the outputs <id>_<i>.bin (created if missing)");
DEFINE_int32(device_id, 0, "Ascend device id");
// The Ascend default, enforce_fp16 (ACL: force_fp16), runs every operator in float16; the graph construction of ViG
// picks neighbours from pairwise distances, which fp16 can reorder, so keep float32 wherever the operator supports it.
DEFINE_string(precision_mode, "preferred_fp32",
              "enforce_fp32, preferred_fp32, enforce_fp16, enforce_origin or preferred_optimal (MindSpore Lite names; "
              "the ACL names force_fp32, allow_fp32_to_fp16, force_fp16, must_keep_origin_dtype and "
              "allow_mix_precision are accepted too; '' = runtime default)");
DEFINE_string(op_select_impl_mode, "", "high_performance or high_precision ('' = runtime default)");

namespace {
int Fail(const std::string &message) {
  std::cerr << "error: " << message << std::endl;
  return 1;
}

// MindSpore Lite's AscendDeviceInfo::SetPrecisionMode takes its own names and passes the ACL option on the right to
// the device; the legacy API takes the ACL names themselves.
struct PrecisionMode {
  const char *lite;
  const char *acl;
};
constexpr PrecisionMode kPrecisionModes[] = {{"enforce_fp32", "force_fp32"},
                                             {"preferred_fp32", "allow_fp32_to_fp16"},
                                             {"enforce_fp16", "force_fp16"},
                                             {"enforce_origin", "must_keep_origin_dtype"},
                                             {"preferred_optimal", "allow_mix_precision"}};

// --precision_mode in the spelling of the API this program is built for; false if it is no known mode.
bool ResolvePrecisionMode(const std::string &flag, std::string *mode) {
  if (flag.empty()) {
    mode->clear();
    return true;
  }
  for (const PrecisionMode &known : kPrecisionModes) {
    if (flag == known.lite || flag == known.acl) {
#ifdef VIG_LEGACY_MS_API
      *mode = known.acl;
#else
      *mode = known.lite;
#endif
      return true;
    }
  }
  return false;
}

// ---- The part that differs between the two APIs. ----
#ifdef VIG_LEGACY_MS_API
using AscendInfo = ms::Ascend310DeviceInfo;
const char kRuntimeName[] = "MindSpore Ascend 310 C++ API (legacy)";

ms::Status BuildModel(ms::Model *model, const std::shared_ptr<ms::Context> &context) {
  ms::Graph graph;
  ms::Status status = ms::Serialization::Load(FLAGS_mindir_path, ms::ModelType::kMindIR, &graph);
  if (status != ms::kSuccess) {
    return status;
  }
  return model->Build(ms::GraphCell(graph), context);
}

// The tensors to pass to Predict for one input file (`data` has the size of model input 0); empty on failure.
std::vector<ms::MSTensor> MakeInputs(std::vector<ms::MSTensor> *model_inputs, const std::vector<char> &data) {
  const ms::MSTensor &input = (*model_inputs)[0];
  // This MSTensor constructor copies `data`, so the buffer can be reused for the next file.
  std::vector<ms::MSTensor> inputs;
  inputs.emplace_back(input.Name(), input.DataType(), input.Shape(), data.data(), data.size());
  return inputs;
}
#else
using AscendInfo = ms::AscendDeviceInfo;
const char kRuntimeName[] = "MindSpore Lite";

ms::Status BuildModel(ms::Model *model, const std::shared_ptr<ms::Context> &context) {
  // Loads the .mindir and compiles it for the device in one call (the weights are read from the same file).
  return model->Build(FLAGS_mindir_path, ms::ModelType::kMindIR, context);
}

std::vector<ms::MSTensor> MakeInputs(std::vector<ms::MSTensor> *model_inputs, const std::vector<char> &data) {
  // The host buffer of the model's own input tensor (allocated on first use); Predict copies it to the device.
  void *buffer = (*model_inputs)[0].MutableData();
  if (buffer == nullptr) {
    return {};
  }
  std::memcpy(buffer, data.data(), data.size());
  return *model_inputs;
}
#endif
// ---- End of the API-specific part. ----

// The device options; returns nullptr (after a message) if the runtime refuses one.
std::shared_ptr<ms::Context> MakeContext(const std::string &precision_mode) {
  auto device = std::make_shared<AscendInfo>();
  device->SetDeviceID(static_cast<uint32_t>(FLAGS_device_id));
  if (!precision_mode.empty()) {
    device->SetPrecisionMode(precision_mode);
    // MindSpore Lite only logs a mode it does not know and keeps its default: do not run with another precision
    // than the one asked for.
    if (device->GetPrecisionMode() != precision_mode) {
      std::cerr << "error: this " << kRuntimeName << " does not accept --precision_mode=" << precision_mode
                << "; choose another one or '' for its default" << std::endl;
      return nullptr;
    }
  }
  if (!FLAGS_op_select_impl_mode.empty()) {
    device->SetOpSelectImplMode(FLAGS_op_select_impl_mode);
  }
  // postprocess.py reads the results as float32, whatever precision the device computed in.
  device->SetOutputType(ms::DataType::kNumberTypeFloat32);
  auto context = std::make_shared<ms::Context>();
  context->MutableDeviceInfo().push_back(device);
  return context;
}
}  // namespace

int main(int argc, char **argv) {
  gflags::SetUsageMessage("main --mindir_path=M.mindir --input_path=DIR [--result_path=DIR] [--device_id=N]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_mindir_path.empty() || FLAGS_input_path.empty()) {
    return Fail("--mindir_path and --input_path are required (see --help)");
  }
  if (FLAGS_device_id < 0) {
    return Fail("--device_id must be >= 0");
  }
  std::string precision_mode;
  if (!ResolvePrecisionMode(FLAGS_precision_mode, &precision_mode)) {
    return Fail("unknown --precision_mode '" + FLAGS_precision_mode +
                "': use enforce_fp32, preferred_fp32, enforce_fp16, enforce_origin, preferred_optimal or ''");
  }
  if (!FLAGS_op_select_impl_mode.empty() && FLAGS_op_select_impl_mode != "high_performance" &&
      FLAGS_op_select_impl_mode != "high_precision") {
    return Fail("unknown --op_select_impl_mode '" + FLAGS_op_select_impl_mode +
                "': use high_performance, high_precision or ''");
  }
  if (!IsFile(FLAGS_mindir_path)) {
    return Fail("model " + FLAGS_mindir_path + " does not exist; run export.py --file_format MINDIR first");
  }
  // Check the inputs and the output directory before the slow model build.
  if (!IsDir(FLAGS_input_path)) {
    return Fail("input directory " + FLAGS_input_path + " does not exist; run preprocess.py first");
  }
  const std::vector<std::string> files = ListBinFiles(FLAGS_input_path);
  if (files.empty()) {
    return Fail("no *.bin inputs in " + FLAGS_input_path + "; run preprocess.py first");
  }
  if (!MakeDirs(FLAGS_result_path)) {
    return 1;
  }

  const std::shared_ptr<ms::Context> context = MakeContext(precision_mode);
  if (context == nullptr) {
    return 1;
  }
  ms::Model model;
  const ms::Status build_status = BuildModel(&model, context);
  if (build_status != ms::kSuccess) {
    return Fail("cannot load and build " + FLAGS_mindir_path + " with " + kRuntimeName + " on Ascend device " +
                std::to_string(FLAGS_device_id) + ": " + build_status.ToString() +
                " (the runtime's log above says why; common causes: the CANN libraries are not set up (source the "
                "toolkit's set_env.sh), or the runtime is older than the MindSpore that exported the model)");
  }

  std::vector<ms::MSTensor> model_inputs = model.GetInputs();
  if (model_inputs.size() != 1) {
    return Fail("the model takes " + std::to_string(model_inputs.size()) + " inputs; expected 1 image tensor");
  }
  const ms::MSTensor &input = model_inputs[0];
  const std::string shape = ShapeString(input.Shape());
  if (input.DataType() != ms::DataType::kNumberTypeFloat32) {
    return Fail("model input '" + input.Name() + "' is not float32, but preprocess.py writes float32");
  }
  const size_t expected = input.DataSize();
  if (input.ElementNum() <= 0 || expected == 0) {
    return Fail("model input '" + input.Name() + "' has no fixed shape (" + shape +
                "); export with fixed --batch_size 1 and --image_size");
  }
  std::cout << kRuntimeName << " model " << FLAGS_mindir_path << " on Ascend device " << FLAGS_device_id
            << " (precision mode " << (precision_mode.empty() ? "default" : precision_mode) << "): input '"
            << input.Name() << "' float32 " << shape << ", " << files.size() << " input files in " << FLAGS_input_path
            << std::endl;

  std::vector<char> data;
  double total_ms = 0.0;
  for (const std::string &file : files) {
    if (!ReadBinary(file, &data)) {
      return 1;
    }
    if (data.size() != expected) {
      return Fail(file + " holds " + std::to_string(data.size()) + " bytes but input '" + input.Name() + "' (" +
                  shape + " float32) takes " + std::to_string(expected) +
                  "; preprocess with the config (image_size) the model was exported with, and export with "
                  "--batch_size 1");
    }
    const std::vector<ms::MSTensor> inputs = MakeInputs(&model_inputs, data);
    if (inputs.empty()) {
      return Fail("cannot allocate the host buffer of input '" + input.Name() + "' (" + std::to_string(expected) +
                  " bytes)");
    }
    std::vector<ms::MSTensor> outputs;
    const auto start = std::chrono::steady_clock::now();
    const ms::Status status = model.Predict(inputs, &outputs);
    total_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (status != ms::kSuccess) {
      return Fail("inference failed on " + file + ": " + status.ToString());
    }
    if (outputs.empty()) {
      return Fail("the model returned no output for " + file);
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].DataType() != ms::DataType::kNumberTypeFloat32) {
        return Fail("output " + std::to_string(i) + " is not float32, but postprocess.py reads float32");
      }
    }
    if (!WriteOutputs(FLAGS_result_path, FileStem(file), outputs)) {
      return 1;
    }
  }
  std::cout << "wrote the outputs of " << files.size() << " inputs to " << FLAGS_result_path << "; average "
            << total_ms / static_cast<double>(files.size()) << " ms per inference" << std::endl;
  return 0;
}
