/**
 * Ascend 310 inference step of the offline flow (preprocess.py -> this -> postprocess.py).
 *
 *   main --mindir_path=vig_ti.mindir --input_path=./preprocess_Result --result_path=./result_Files --device_id=0
 *
 * Each <input_path>/<id>.bin is one model input exactly as preprocess.py wrote it (raw float32, 1x3xSxS, the
 * evaluation transform of eval.py already applied), so no image decoding happens here: the 310 results see the
 * same pixels as eval.py. Output i of each input goes to <result_path>/<id>_<i>.bin (raw float32 logits for i = 0),
 * the layout postprocess.py and infer.py share.
 */
#include <gflags/gflags.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"
#include "inc/utils.h"

namespace ms = mindspore;

DEFINE_string(mindir_path, "", "exported model (export.py --file_format MINDIR, batch size 1)");
DEFINE_string(input_path, "", "directory of preprocessed inputs (*.bin, float32 1x3xSxS)");
DEFINE_string(result_path, "./result_Files", "directory for the outputs <id>_<i>.bin (created if missing)");
DEFINE_int32(device_id, 0, "Ascend device id");
// The ACL default, force_fp16, runs every operator in float16; the graph construction of ViG picks neighbours
// from pairwise distances, which fp16 can reorder, so keep float32 wherever the operator supports it.
DEFINE_string(precision_mode, "allow_fp32_to_fp16",
              "force_fp16, allow_fp32_to_fp16, must_keep_origin_dtype or allow_mix_precision ('' = toolkit default)");
DEFINE_string(op_select_impl_mode, "", "high_performance or high_precision ('' = toolkit default)");

namespace {
int Fail(const std::string &message) {
  std::cerr << "error: " << message << std::endl;
  return 1;
}

std::shared_ptr<ms::Context> MakeContext() {
  auto device = std::make_shared<ms::Ascend310DeviceInfo>();
  device->SetDeviceID(static_cast<uint32_t>(FLAGS_device_id));
  if (!FLAGS_precision_mode.empty()) {
    device->SetPrecisionMode(FLAGS_precision_mode);
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

  ms::Graph graph;
  ms::Status status = ms::Serialization::Load(FLAGS_mindir_path, ms::ModelType::kMindIR, &graph);
  if (status != ms::kSuccess) {
    return Fail("cannot load " + FLAGS_mindir_path + ": " + status.ToString());
  }
  ms::Model model;
  status = model.Build(ms::GraphCell(graph), MakeContext());
  if (status != ms::kSuccess) {
    return Fail("cannot build " + FLAGS_mindir_path + " on device " + std::to_string(FLAGS_device_id) + ": " +
                status.ToString());
  }

  const std::vector<ms::MSTensor> model_inputs = model.GetInputs();
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
  std::cout << "model " << FLAGS_mindir_path << ": input '" << input.Name() << "' float32 " << shape << ", "
            << files.size() << " input files in " << FLAGS_input_path << std::endl;

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
    // This MSTensor constructor copies `data`, so the buffer can be reused for the next file.
    std::vector<ms::MSTensor> inputs;
    inputs.emplace_back(input.Name(), input.DataType(), input.Shape(), data.data(), data.size());
    std::vector<ms::MSTensor> outputs;
    const auto start = std::chrono::steady_clock::now();
    status = model.Predict(inputs, &outputs);
    total_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (status != ms::kSuccess) {
      return Fail("inference failed on " + file + ": " + status.ToString());
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
