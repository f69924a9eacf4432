#!/bin/bash
# clipbuild's distcc masquerade: /usr/lib/distcc/bin/{gcc,cc,...} in a build sandbox with --distcc hosts
# (Portage's FEATURES=distcc puts that directory first in PATH). Mounted by clipbuild; never in a package key.
#
# Why not a plain symlink to distcc: clip-toolchain.eclass's CC wrapper runs `gcc -specs=musl.specs ...`, and
# distcc refuses to distribute any command with -specs= ("must be local"). For a compile-only command (-c) the
# musl specs change only the preprocessor's include path (*cpp_options) and repeat it for cc1 (*cc1):
#     *cpp_options:  -nostdinc -isystem <ROOT>/usr/include -isystem include%s %(old_cpp_options)
#     *cc1:          %(cc1_cpu) -nostdinc -isystem <ROOT>/usr/include -isystem include%s
# which is exactly `-nostdinc -isystem <ROOT>/usr/include -isystem <gcc's include dir>` on the command line.
# distcc preprocesses locally (with those options) and sends the preprocessed source, so the helper's identical
# gcc gets the same input and options. Any other specs file, or any command that is not compile-only (links,
# where the specs choose crt files, the loader and libraries), runs the real compiler locally and unchanged.

name=${0##*/}
self=${0%/*}
PATH=:${PATH}:
PATH=${PATH//:${self}:/:}
PATH=${PATH#:}
PATH=${PATH%:}
export PATH

local_compile() {
	exec "${name}" "$@"
}

# The include directory the musl specs name, when FILE is exactly clip-toolchain's specs shape; else nothing.
specs_include() {
	local file=$1 section="" cpp="" cc1="" line
	while IFS= read -r line; do
		case ${line} in
			\*cpp_options:) section=cpp ;;
			\*cc1:) section=cc1 ;;
			\**:) section="" ;;
			"") ;;
			*) [[ ${section} == cpp ]] && cpp=${line}; [[ ${section} == cc1 ]] && cc1=${line} ;;
		esac
	done < "${file}"
	local inc=${cpp#-nostdinc -isystem }
	inc=${inc%% *}
	[[ ${cpp} == "-nostdinc -isystem ${inc} -isystem include%s %(old_cpp_options)" &&
		${cc1} == "%(cc1_cpu) -nostdinc -isystem ${inc} -isystem include%s" ]] && echo "${inc}"
}

compile_only=0
for arg in "$@"; do
	[[ ${arg} == -c ]] && compile_only=1
done
[[ ${compile_only} == 1 ]] || local_compile "$@"

args=()
for arg in "$@"; do
	if [[ ${arg} == -specs=* ]]; then
		inc=$(specs_include "${arg#-specs=}")
		[[ -n ${inc} ]] || local_compile "$@"
		args+=( -nostdinc -isystem "${inc}" -isystem "$("${name}" -print-file-name=include)" )
	else
		args+=( "${arg}" )
	fi
done

export LD_LIBRARY_PATH=${CLIP_DISTCC_TREE}/usr/lib/x86_64-linux-gnu:${CLIP_DISTCC_TREE}/lib/x86_64-linux-gnu
exec "${CLIP_DISTCC_TREE}/usr/bin/distcc" "${name}" "${args[@]}"
