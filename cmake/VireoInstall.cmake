# `cmake --install build [--prefix P]` (DESTDIR honoured): the four programs, libvireo with its headers and
# pkg-config files, the Python module, systemd units (with socket activation), bash completion, man pages
# generated from the programs' help texts, and a default /etc/vireo/vireod.conf. docs/install.md.
include(GNUInstallDirs)

# Relative paths are under the install prefix (which `cmake --install --prefix` may change at install time).
set(VIREO_PYTHON_SITEDIR "lib/python3/dist-packages" CACHE PATH
    "where the vireo Python package goes (Debian's python3 searches <prefix>/lib/python3/dist-packages)")
set(VIREO_SYSTEMD_UNITDIR "lib/systemd/system" CACHE PATH "systemd unit directory")
set(VIREO_BASH_COMPLETIONDIR "${CMAKE_INSTALL_DATADIR}/bash-completion/completions" CACHE PATH
    "bash-completion directory")
# vireod reads /etc/vireo whatever the prefix (its state paths are the system's), so the config goes there.
set(VIREO_SYSCONF "/etc/vireo")

install(TARGETS vireo vireo-img vireo-vmm RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS vireod RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(TARGETS vireo_shared LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_COMPONENT Unspecified)
install(FILES src/client/vireo.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/vireo)
install(FILES src/client/client.h src/client/transport.h src/client/uri.h src/client/wire.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/vireo/client)
install(FILES src/common/error.h src/common/fd.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/vireo/common)
# Files that name install paths are written at install time, for the prefix actually installed to.
set(_gen ${CMAKE_BINARY_DIR}/install-gen)
install(CODE "
  set(PROJECT_VERSION ${PROJECT_VERSION})
  set(CMAKE_INSTALL_FULL_LIBDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}\")
  set(CMAKE_INSTALL_FULL_INCLUDEDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_INCLUDEDIR}\")
  set(VIREO_SBINDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SBINDIR}\")
  set(VIREO_SYSCONF ${VIREO_SYSCONF})
  foreach(pc vireo vireo-cxx)
    configure_file(${CMAKE_SOURCE_DIR}/src/client/\${pc}.pc.in ${_gen}/\${pc}.pc @ONLY)
    file(INSTALL ${_gen}/\${pc}.pc DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig\")
  endforeach()
  foreach(unit vireod.service vireod.socket vireod-ro.socket vireod-tls.socket)
    configure_file(${CMAKE_SOURCE_DIR}/data/systemd/\${unit}.in ${_gen}/\${unit} @ONLY)
    if(IS_ABSOLUTE \"${VIREO_SYSTEMD_UNITDIR}\")
      file(INSTALL ${_gen}/\${unit} DESTINATION \"${VIREO_SYSTEMD_UNITDIR}\")
    else()
      file(INSTALL ${_gen}/\${unit} DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${VIREO_SYSTEMD_UNITDIR}\")
    endif()
  endforeach()")

install(DIRECTORY python/vireo DESTINATION ${VIREO_PYTHON_SITEDIR} FILES_MATCHING PATTERN "*.py"
        PATTERN "__pycache__" EXCLUDE)

install(FILES data/completion/vireo data/completion/vireo-img DESTINATION ${VIREO_BASH_COMPLETIONDIR})

# The default settings file, unless the admin already has one.
install(CODE "
  set(_conf \"\$ENV{DESTDIR}${VIREO_SYSCONF}/vireod.conf\")
  if(EXISTS \"\${_conf}\")
    message(STATUS \"Keeping existing: \${_conf}\")
  else()
    file(INSTALL \"${CMAKE_SOURCE_DIR}/data/vireod.conf\" DESTINATION \"${VIREO_SYSCONF}\")
  endif()")

# Man pages from the help texts (scripts/gen-man.py), rebuilt when a program changes.
set(_man_pages)
foreach(spec "vireo:1:vireo" "vireo-img:1:vireo-img" "vireo-vmm:1:vireo-vmm" "vireod:8:vireod")
  string(REPLACE ":" ";" parts ${spec})
  list(GET parts 0 prog)
  list(GET parts 1 sec)
  list(GET parts 2 target)
  set(out ${CMAKE_BINARY_DIR}/man/${prog}.${sec})
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
    COMMAND ${VIREO_PYTHON} ${CMAKE_SOURCE_DIR}/scripts/gen-man.py ${prog} $<TARGET_FILE:${target}> ${sec} ${out}
    DEPENDS ${target} ${CMAKE_SOURCE_DIR}/scripts/gen-man.py
    COMMENT "Generating man page ${prog}(${sec})" VERBATIM)
  list(APPEND _man_pages ${out})
  install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${sec})
endforeach()
add_custom_target(vireo-man ALL DEPENDS ${_man_pages})
