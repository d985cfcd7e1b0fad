"""fuzz_target: one fuzz target as three Bazel targets.

  NAME_fuzz          the target's code (LLVMFuzzerTestOneInput) as a library
  NAME_corpus_test   replays fuzz/corpus/NAME/ through it (corpus_main.c): part of `bazel test //...`
  NAME_fuzzer        the libFuzzer binary: manual, built by fuzz/run.sh with clang
"""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_library", "cc_test")

def fuzz_target(name, deps):
    cc_library(
        name = name + "_fuzz",
        srcs = [name + "_fuzz.c"],
        deps = [":fuzz_input"] + deps,
        alwayslink = True,
    )
    cc_test(
        name = name + "_corpus_test",
        size = "small",
        srcs = ["corpus_main.c"],
        args = ["fuzz/corpus/" + name],
        data = native.glob(["corpus/" + name + "/*"]),
        deps = [":" + name + "_fuzz", "//common"],
    )
    cc_binary(
        name = name + "_fuzzer",
        linkopts = ["-fsanitize=fuzzer"],
        tags = ["manual"],
        deps = [":" + name + "_fuzz"],
    )
