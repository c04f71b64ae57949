# Test registration helpers. Tests that cannot run here (no /dev/kvm, no tap permission) must say so and
# skip: GoogleTest via GTEST_SKIP(), pytest via pytest.skip(); ctest then reports them as skipped.

# vireo_add_gtest(NAME SOURCES a.cpp b.cpp LIBS lib1 lib2 [LABELS l1])
function(vireo_add_gtest name)
  cmake_parse_arguments(A "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE ${A_LIBS} GTest::gtest GTest::gtest_main GTest::gmock vireo_warnings)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/tests)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_compile_definitions(${name} PRIVATE VIREO_BUILD_DIR="${CMAKE_BINARY_DIR}"
                                             VIREO_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  gtest_discover_tests(${name}
    PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" LABELS "unit;${A_LABELS}"
    DISCOVERY_TIMEOUT 30)
endfunction()

# vireo_add_pytest(NAME FILE path/to/test_x.py [TIMEOUT seconds] [LABELS l1])
# Runs `python3 -m pytest FILE` with VIREO_BUILD_DIR / VIREO_SOURCE_DIR in the environment.
function(vireo_add_pytest name)
  cmake_parse_arguments(A "" "FILE;TIMEOUT" "LABELS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 600)
  endif()
  add_test(NAME ${name}
           COMMAND ${VIREO_PYTHON} -m pytest -q -p no:cacheprovider ${CMAKE_CURRENT_SOURCE_DIR}/${A_FILE}
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(${name} PROPERTIES
    ENVIRONMENT "VIREO_BUILD_DIR=${CMAKE_BINARY_DIR};VIREO_SOURCE_DIR=${CMAKE_SOURCE_DIR};PYTHONDONTWRITEBYTECODE=1"
    TIMEOUT ${A_TIMEOUT}
    SKIP_REGULAR_EXPRESSION "(\n|= )[0-9]+ skipped(, [0-9]+ warnings?)? in"
    LABELS "integration;${A_LABELS}")
endfunction()

# vireo_add_gtest_in_kit(TARGET [TIMEOUT s])
# Registers a gtest binary whose KVM cases GTEST_SKIP() without /dev/kvm a second time, run as a whole inside
# the KVM kit (tests/support, docs/kvm-kit.md) so those cases really run on KVM-less machines. Where /dev/kvm
# works natively the kit run reports "skipped" (exit 125): gtest_discover_tests already ran them there.
function(vireo_add_gtest_in_kit target)
  cmake_parse_arguments(A "" "TIMEOUT" "" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  math(EXPR _outer "${A_TIMEOUT} + 60")
  add_test(NAME ${target}_in_kit
           COMMAND ${VIREO_PYTHON} ${CMAKE_SOURCE_DIR}/scripts/kvm-run --kit-only --timeout ${A_TIMEOUT}
                   $<TARGET_FILE:${target}> --gtest_brief=1)
  set_tests_properties(${target}_in_kit PROPERTIES SKIP_RETURN_CODE 125 TIMEOUT ${_outer} LABELS "integration;kit"
    ENVIRONMENT "VIREO_BUILD_DIR=${CMAKE_BINARY_DIR};VIREO_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()
