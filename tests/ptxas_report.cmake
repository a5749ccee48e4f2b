# tests/ptxas_report.cmake - cmake -P script: compiles tests/kernel_resources.cu with
# ANSAN_PTXAS_INSTANCES and `-Xptxas -v` and writes what ptxas reports to OUTPUT.
#   -DNVCC=... -DSOURCE=... -DINCLUDE=... -DGENCODE=<;-list> -DOBJECT=... -DOUTPUT=...
execute_process(
  COMMAND ${NVCC} -std=c++17 --expt-relaxed-constexpr ${GENCODE} -I${INCLUDE} -DANSAN_PTXAS_INSTANCES
          -Xptxas -v -c ${SOURCE} -o ${OBJECT}
  RESULT_VARIABLE status ERROR_VARIABLE report OUTPUT_VARIABLE stdout)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "nvcc failed (${status}):\n${report}")
endif()
file(WRITE ${OUTPUT} "${stdout}${report}")
