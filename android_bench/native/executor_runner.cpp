// emobench's native executor_runner: the command line of ExecuTorch's
// examples/portable/executor_runner, written for emobench from its documented
// behaviour and linked against an installed ExecuTorch (the Python wheel's
// runtime, or an ExecuTorch built from source for Android).
//
// Flags (gflags style: --name=value, --name value, --bool, --nobool):
//   --model_path      the .pte to run (default model.pte)
//   --inputs          comma-separated raw files, one per method input (default: all ones)
//   --output_file     writes each tensor output to <output_file>-<i>.bin
//   --num_executions  how many times to execute the method (default 1)
//   --cpu_threads     threads of the shared thread pool; -1 = the cores this process may use
//   --print_output    none | summary | all (default summary)
//   --method_name     the method to run (default: forward, else the program's first method)
//   --etdump_path     write an ETDump there (needs a build with the event tracer); the
//                     tracer is attached only when this flag is given
//
// Log lines go through ET_LOG, so the runtime's platform layer formats them
// (`I 00:00:00.032792 executorch:executor_runner.cpp:LINE] ...` on Linux,
// logcat tag ExecuTorch on Android). Exit status: 0 on success, 1 for a bad
// flag or a program that does not parse, and an abort (134) when an
// ET_CHECK_MSG fails (missing model, unreadable inputs, failed execution).

#include <sched.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/assert.h>
#include <executorch/runtime/platform/log.h>
#include <executorch/runtime/platform/runtime.h>

#ifdef ET_EVENT_TRACER_ENABLED
#include <executorch/devtools/etdump/etdump_flatcc.h>
#endif

#if defined(ET_USE_THREADPOOL)
#if __has_include(<executorch/extension/threadpool/threadpool.h>)
#include <executorch/extension/threadpool/threadpool.h>
#else
// The Python wheel ships the thread pool library but not its header; these two
// members are all the runner needs (plain, non-virtual member functions).
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool
#endif
#endif

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::extension::FileDataLoader;
using executorch::extension::MallocMemoryAllocator;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::MethodMeta;
using executorch::runtime::Program;
using executorch::runtime::Result;
using executorch::runtime::Span;

namespace {

struct Flags {
  std::string model_path = "model.pte";
  std::string inputs;
  std::string output_file;
  int32_t num_executions = 1;
  int32_t cpu_threads = -1;
  std::string print_output = "summary";
  std::string method_name;
  std::string etdump_path = "model.etdump";
  bool etdump_path_given = false;
};

bool parse_int(const std::string& text, int32_t* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (*end != '\0' || value < INT32_MIN || value > INT32_MAX) return false;
  *out = static_cast<int32_t>(value);
  return true;
}

// Parses argv the way gflags does for these flags. Returns false (after
// printing gflags' message) on an unknown flag, a missing value or a bad number.
bool parse_flags(int argc, char** argv, Flags* flags, std::vector<std::string>* extra) {
  static const char* kStringFlags[] = {"model_path", "inputs", "output_file",
                                       "print_output", "method_name", "etdump_path"};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (int j = i + 1; j < argc; ++j) extra->push_back(argv[j]);
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      extra->push_back(arg);
      continue;
    }
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string name = body, value;
    bool has_value = false;
    size_t eq = body.find('=');
    if (eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    bool is_string = false;
    for (const char* known : kStringFlags) is_string = is_string || name == known;
    bool is_int = name == "num_executions" || name == "cpu_threads";
    if (!is_string && !is_int) {
      std::fprintf(stderr, "ERROR: unknown command line flag '%s'\n", name.c_str());
      return false;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ERROR: flag '%s' is missing its argument\n", arg.c_str());
        return false;
      }
      value = argv[++i];
    }
    if (is_int) {
      int32_t number = 0;
      if (!parse_int(value, &number) || (name == "num_executions" && number < 0)) {
        std::fprintf(stderr, "ERROR: illegal value '%s' specified for int32 flag '%s'\n",
                     value.c_str(), name.c_str());
        return false;
      }
      (name == "num_executions" ? flags->num_executions : flags->cpu_threads) = number;
    } else if (name == "model_path") {
      flags->model_path = value;
    } else if (name == "inputs") {
      flags->inputs = value;
    } else if (name == "output_file") {
      flags->output_file = value;
    } else if (name == "print_output") {
      flags->print_output = value;
    } else if (name == "method_name") {
      flags->method_name = value;
    } else {
      flags->etdump_path = value;
      flags->etdump_path_given = true;
    }
  }
  return true;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    if (comma > start) parts.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return parts;
}

// Threads for --cpu_threads=-1: the cores this process may run on, so that a
// `taskset` mask given by the harness is honoured.
uint32_t usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) return static_cast<uint32_t>(count);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? hw : 1;
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

const char* scalar_name(ScalarType type) {
  switch (type) {
    case ScalarType::Float: return "float";
    case ScalarType::Int: return "int";
    case ScalarType::Char: return "char";
    case ScalarType::Byte: return "byte";
    case ScalarType::Bool: return "bool";
    case ScalarType::Long: return "long";
    default: return nullptr;
  }
}

double element(const Tensor& t, size_t j) {
  switch (t.scalar_type()) {
    case ScalarType::Float: return t.const_data_ptr<float>()[j];
    case ScalarType::Int: return t.const_data_ptr<int32_t>()[j];
    case ScalarType::Char: return t.const_data_ptr<int8_t>()[j];
    case ScalarType::Byte: return t.const_data_ptr<uint8_t>()[j];
    case ScalarType::Bool: return t.const_data_ptr<bool>()[j] ? 1.0 : 0.0;
    case ScalarType::Long: return static_cast<double>(t.const_data_ptr<int64_t>()[j]);
    default: return 0.0;
  }
}

void print_outputs(const std::vector<EValue>& outputs, const std::string& mode) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].isTensor()) {
      std::printf(mode == "all" ? "Output[%zu]: Not Tensor\n" : "OutputX %zu: (not a tensor)\n", i);
      continue;
    }
    const Tensor& t = outputs[i].toTensor();
    const char* kind = scalar_name(t.scalar_type());
    if (kind == nullptr) continue;
    size_t n = static_cast<size_t>(t.numel());
    bool is_float = t.scalar_type() == ScalarType::Float;
    if (mode == "all") {
      for (size_t j = 0; j < n; ++j) {
        if (is_float) std::printf("Output[%zu][%zu]: (float) %f\n", i, j, element(t, j));
        else std::printf("Output[%zu][%zu]: (%s) %lld\n", i, j, kind, static_cast<long long>(element(t, j)));
      }
      continue;
    }
    std::string sizes;
    for (ssize_t d = 0; d < t.dim(); ++d) sizes += (d ? ", " : "") + std::to_string(t.size(d));
    std::printf("OutputX %zu: tensor(sizes=[%s], [", i, sizes.c_str());
    const size_t limit = 100;
    for (size_t j = 0; j < n; ++j) {
      if (n > 2 * limit && j == limit) {
        std::printf(", ...");
        j = n - limit;
      }
      if (is_float) std::printf("%s%g", j ? ", " : "", element(t, j));
      else std::printf("%s%lld", j ? ", " : "", static_cast<long long>(element(t, j)));
    }
    std::printf("])\n");
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  executorch::runtime::runtime_init();

  Flags flags;
  std::vector<std::string> extra;
  if (!parse_flags(argc, argv, &flags, &extra)) return 1;
  if (!extra.empty()) {
    std::string joined;
    for (const auto& e : extra) joined += (joined.empty() ? "" : " ") + e;
    ET_LOG(Error, "Extra commandline args: %s", joined.c_str());
    return 1;
  }
  if (flags.print_output != "none" && flags.print_output != "summary" && flags.print_output != "all") {
    ET_LOG(Error, "Unknown --print_output mode '%s'. Expected 'none', 'summary', or 'all'.",
           flags.print_output.c_str());
    return 1;
  }

#if defined(ET_USE_THREADPOOL)
  uint32_t threads = flags.cpu_threads == -1 ? usable_cores() : static_cast<uint32_t>(flags.cpu_threads);
  ET_LOG(Info, "Resetting threadpool with num threads = %u", threads);
  if (flags.cpu_threads != 0 && threads > 0) {
    executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(threads);
  }
#endif

  std::vector<std::vector<char>> input_buffers;
  if (!flags.inputs.empty()) {
    ET_LOG(Info, "Loading inputs from input file(s).");
    for (const std::string& path : split_commas(flags.inputs)) {
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        ET_LOG(Error, "Failed to open input file: %s", path.c_str());
        ET_CHECK_MSG(false, "Could not load inputs: 0x%" PRIx32, static_cast<uint32_t>(Error::AccessFailed));
      }
      input_buffers.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }

  auto load_start = std::chrono::steady_clock::now();
  Result<FileDataLoader> loader = FileDataLoader::from(flags.model_path.c_str());
  ET_CHECK_MSG(loader.ok(), "FileDataLoader::from() failed: 0x%" PRIx32,
               static_cast<uint32_t>(loader.error()));
  Result<Program> program = Program::load(&loader.get());
  if (!program.ok()) {
    ET_LOG(Error, "Failed to parse model file %s", flags.model_path.c_str());
    return 1;
  }
  ET_LOG(Info, "Model file %s is loaded.", flags.model_path.c_str());

  std::string method_name = flags.method_name;
  if (method_name.empty()) {
    for (size_t m = 0; m < program->num_methods(); ++m) {
      Result<const char*> name = program->get_method_name(m);
      if (name.ok() && std::strcmp(*name, "forward") == 0) method_name = "forward";
    }
    if (method_name.empty()) {
      Result<const char*> first = program->get_method_name(0);
      ET_CHECK_MSG(first.ok(), "Program has no methods");
      method_name = *first;
    }
  }
  ET_LOG(Info, "Using method %s", method_name.c_str());

  Result<MethodMeta> meta = program->method_meta(method_name.c_str());
  ET_CHECK_MSG(meta.ok(), "Failed to get method_meta for %s: 0x%" PRIx32, method_name.c_str(),
               static_cast<uint32_t>(meta.error()));

  MallocMemoryAllocator method_allocator;
  MallocMemoryAllocator temp_allocator;
  std::vector<std::unique_ptr<uint8_t[]>> planned_buffers;
  std::vector<Span<uint8_t>> planned_spans;
  for (size_t id = 0; id < meta->num_memory_planned_buffers(); ++id) {
    size_t buffer_size = static_cast<size_t>(meta->memory_planned_buffer_size(id).get());
    ET_LOG(Info, "Setting up planned buffer %zu, size %zu.", id, buffer_size);
    planned_buffers.push_back(std::make_unique<uint8_t[]>(buffer_size));
    planned_spans.push_back({planned_buffers.back().get(), buffer_size});
  }
  HierarchicalAllocator planned_memory({planned_spans.data(), planned_spans.size()});
  MemoryManager memory_manager(&method_allocator, &planned_memory, &temp_allocator);

  executorch::runtime::EventTracer* event_tracer = nullptr;
#ifdef ET_EVENT_TRACER_ENABLED
  // Only with --etdump_path: a plain latency run pays nothing for the tracer.
  executorch::etdump::ETDumpGen etdump_gen;
  if (flags.etdump_path_given) event_tracer = &etdump_gen;
#else
  if (flags.etdump_path_given) {
    ET_LOG(Error, "--etdump_path given, but this runner was built without the event tracer "
                  "(configure ExecuTorch and the runner with -DEXECUTORCH_BUILD_DEVTOOLS=ON "
                  "-DEXECUTORCH_ENABLE_EVENT_TRACER=ON); no ETDump will be written.");
  }
#endif

  Result<Method> method = program->load_method(method_name.c_str(), &memory_manager, event_tracer);
  ET_CHECK_MSG(method.ok(), "Loading of method %s failed with status 0x%" PRIx32, method_name.c_str(),
               static_cast<uint32_t>(method.error()));
  ET_LOG(Info, "Model loaded in %f ms.", elapsed_ms(load_start));

  // Inputs: one raw buffer per tensor input, or all ones when no --inputs.
  size_t num_inputs = meta->num_inputs();
  if (!input_buffers.empty() && input_buffers.size() != num_inputs) {
    ET_LOG(Error, "Wrong number of inputs allocated from external buffers: expected %zu, got %zu",
           num_inputs, input_buffers.size());
    ET_CHECK_MSG(false, "Could not prepare inputs: 0x%" PRIx32, static_cast<uint32_t>(Error::InvalidArgument));
  }
  std::vector<std::vector<uint8_t>> input_storage(num_inputs);
  std::vector<executorch::extension::TensorPtr> input_tensors;
  for (size_t i = 0; i < num_inputs; ++i) {
    auto info = meta->input_tensor_meta(i);
    ET_CHECK_MSG(info.ok(), "Could not prepare inputs: input %zu is not a tensor (0x%" PRIx32 ")", i,
                 static_cast<uint32_t>(info.error()));
    std::vector<uint8_t>& storage = input_storage[i];
    if (!input_buffers.empty()) {
      if (input_buffers[i].size() != info->nbytes()) {
        ET_LOG(Error, "input size (%zu) and tensor size (%zu) mismatch!", input_buffers[i].size(),
               info->nbytes());
        ET_CHECK_MSG(false, "Could not prepare inputs: 0x%" PRIx32,
                     static_cast<uint32_t>(Error::InvalidArgument));
      }
      storage.assign(input_buffers[i].begin(), input_buffers[i].end());
    } else {
      storage.assign(info->nbytes(), 0);
      size_t numel = 1;
      for (int32_t s : info->sizes()) numel *= static_cast<size_t>(s);
      for (size_t j = 0; j < numel; ++j) {
        switch (info->scalar_type()) {
          case ScalarType::Float: reinterpret_cast<float*>(storage.data())[j] = 1.0f; break;
          case ScalarType::Int: reinterpret_cast<int32_t*>(storage.data())[j] = 1; break;
          case ScalarType::Long: reinterpret_cast<int64_t*>(storage.data())[j] = 1; break;
          case ScalarType::Char: case ScalarType::Byte: case ScalarType::Bool: storage[j] = 1; break;
          default: break;
        }
      }
    }
    std::vector<executorch::aten::SizesType> sizes(info->sizes().begin(), info->sizes().end());
    std::vector<executorch::aten::DimOrderType> dim_order(info->dim_order().begin(), info->dim_order().end());
    input_tensors.push_back(executorch::extension::make_tensor_ptr(
        std::move(sizes), storage.data(), std::move(dim_order), {}, info->scalar_type()));
    Error set = method->set_input(EValue(*input_tensors.back()), i);
    ET_CHECK_MSG(set == Error::Ok, "Could not prepare inputs: 0x%" PRIx32, static_cast<uint32_t>(set));
  }
  ET_LOG(Info, "Inputs prepared.");

  double total_ms = 0.0;
  for (int32_t i = 0; i < flags.num_executions; ++i) {
    auto start = std::chrono::steady_clock::now();
    Error status = method->execute();
    double iteration_ms = elapsed_ms(start);
    ET_CHECK_MSG(status == Error::Ok, "Execution of method %s failed with status 0x%" PRIx32,
                 method_name.c_str(), static_cast<uint32_t>(status));
    total_ms += iteration_ms;
    ET_LOG(Info, "Iteration %d of %d: %f ms", i + 1, flags.num_executions, iteration_ms);
  }
  ET_LOG(Info, "Model executed successfully %" PRIu32 " time(s) in %f ms.",
         static_cast<uint32_t>(flags.num_executions), total_ms);

  std::vector<EValue> outputs(method->outputs_size());
  if (flags.num_executions > 0) {
    Error got = method->get_outputs(outputs.data(), outputs.size());
    ET_CHECK_MSG(got == Error::Ok, "Could not read outputs: 0x%" PRIx32, static_cast<uint32_t>(got));
  }
  ET_LOG(Info, "%zu outputs: ", outputs.size());

  if (!flags.output_file.empty() && flags.num_executions > 0) {
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].isTensor()) continue;
      const Tensor& t = outputs[i].toTensor();
      std::string name = flags.output_file + "-" + std::to_string(i) + ".bin";
      ET_LOG(Info, "Writing output to file: %s", name.c_str());
      FILE* out = std::fopen(name.c_str(), "wb");
      ET_CHECK_MSG(out != nullptr, "Failed to open output file: %s", name.c_str());
      std::fwrite(t.const_data_ptr(), 1, t.nbytes(), out);
      std::fclose(out);
    }
  }
  if (flags.print_output != "none" && flags.num_executions > 0) print_outputs(outputs, flags.print_output);

#ifdef ET_EVENT_TRACER_ENABLED
  if (flags.etdump_path_given) {
    executorch::etdump::ETDumpResult result = etdump_gen.get_etdump_data();
    if (result.buf != nullptr && result.size > 0) {
      FILE* f = std::fopen(flags.etdump_path.c_str(), "wb");
      ET_CHECK_MSG(f != nullptr, "Failed to open ETDump file: %s", flags.etdump_path.c_str());
      std::fwrite(result.buf, 1, result.size, f);
      std::fclose(f);
      std::free(result.buf);
      ET_LOG(Info, "ETDump written to file '%s'.", flags.etdump_path.c_str());
    } else {
      ET_LOG(Error, "No ETDump data was recorded; nothing written to '%s'.", flags.etdump_path.c_str());
    }
  }
#endif
  return 0;
}
